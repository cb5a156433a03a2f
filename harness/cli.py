"""`harness`: the command line over the library. Each command is a thin wrapper."""

import argparse
import json
import os
import sys

import yaml


def _param(text):
    """Parse KEY=VALUE, reading VALUE as a YAML scalar (never evaluated as code)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def _add_data_options(parser):
    parser.add_argument("--dataset", default="digits", help="digits, mnist, fashion_mnist, cifar10 or imagefolder:PATH")
    parser.add_argument("--data-dir", help="folder holding downloaded datasets (default: $HARNESS_DATA_DIR, then Keras's cache)")
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--val-size", type=int)
    parser.add_argument("--test-size", type=int)


def _load_dataset(args):
    from harness import data

    return data.load(
        args.dataset,
        data_dir=args.data_dir,
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        seed=args.seed,
    )


def cmd_train(args):
    from harness.train import run_trial

    result = run_trial(dict(args.param), _load_dataset(args), epochs=args.epochs, seed=args.seed, verbose=args.verbose)
    print(json.dumps(result.summary(), indent=2))
    if args.save:
        result.model.save(args.save)
        print(f"model saved to {args.save}")
    return 1 if result.diverged else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="harness", description="Taylor-expansion CNN search harness")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one configuration and print its result")
    _add_data_options(train)
    train.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                       help="a model or training parameter, e.g. insertion=dense function=softplus order=3")
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save", metavar="FILE.keras", help="save the trained model")
    train.add_argument("--verbose", type=int, default=0)
    train.set_defaults(run=cmd_train)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
