"""`geogan <command>`: one entry point over the stage CLIs (each is also `python -m geogan.stages.<name>`)."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

COMMANDS = {
    "ingest": "prepare a dataset (synthetic, CelebA folder, folder + CSV, or S3)",
    "landmarks": "68-point landmarks for the prepared dataset",
    "split": "unpaired A/B split of one attribute",
    "pack": "the training rows of some splits as compact WebP, to carry to a GPU machine",
    "train_judge": "the attribute classifier that judges every evaluation (once per data version)",
    "evalset": "the fixed evaluation set of one attribute (test sources x references)",
    "train": "train GeoGAN for one attribute (resumable; torchrun for several GPUs)",
    "evaluate": "a generator and the baselines on the evaluation set: judge, FID/KID, regions, identity, geometry",
    "register": "log the generator to MLflow and register it with alias 'candidate'",
    "promote": "move alias 'champion' to the candidate if it passes the gate",
    "compare": "the champion and candidate of each attribute: each metric with its 95% interval, the baselines beside",
    "transfer": "transfer an attribute from reference faces onto source faces (one pair, or folders of many)",
    "remove": "remove the attribute from an image",
    "demo": "a page to try a model in a browser and compare two registered versions",
    "showcase": "a sources x references figure of held-out transfers (warped b', masks, F(b))",
}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        from geogan import __version__

        print(f"geogan {__version__}")
        return
    if not args or args[0] in {"-h", "--help"}:
        width = max(map(len, COMMANDS))
        print("usage: geogan <command> [--params params.yaml] [...]  |  geogan --version\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:<{width}}  {text}")
        return
    name = args[0].replace("-", "_")
    if name not in COMMANDS:
        import difflib

        hint = difflib.get_close_matches(name, COMMANDS, n=1)
        sys.exit(f"geogan: unknown command '{args[0]}'" + (f"; did you mean '{hint[0]}'?" if hint else ""))
    sys.argv[0] = f"geogan {args[0]}"  # what argparse shows in usage lines and errors: the command as typed
    importlib.import_module(f"geogan.stages.{name}").main(args[1:])


if __name__ == "__main__":
    main()
