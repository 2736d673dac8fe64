"""`geogan promote --attribute X`: move alias `champion` to the candidate only if it passes the gate."""

from __future__ import annotations

from typing import Sequence

from geogan.config import Config
from geogan.stages._common import StageError, exit_with, load, parser, run_main
from geogan.tracking import checked_tracking_uri


def run(cfg: Config, attribute: str) -> dict:
    """Promote or refuse (with the failing figures); never deletes or overwrites a version."""
    from geogan.registry import PromotionRefused, promote

    try:
        return promote(attribute, cfg.promote, checked_tracking_uri(cfg.mlflow.tracking_uri))
    except PromotionRefused as e:
        raise StageError(f"not promoted: {e}") from e


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, attribute=True)
    args = p.parse_args(argv)
    exit_with(run_main("promote", lambda: run(load(args), args.attribute)))


if __name__ == "__main__":
    main()
