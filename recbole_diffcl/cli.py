"""Command line of the plugin: ``python run_recbole_diffcl.py`` or ``python -m recbole_diffcl``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable, Optional


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # --config_file=x must not be read as --config_files
        description="Train and evaluate a sequential recommender (DiffCLRec, CL4SRec, DuoRec or any RecBole "
        "model) with the recbole_diffcl plugin. Extra --key=value pairs override properties.",
    )
    parser.add_argument("--model", "-m", default=None, help="model name (default: DiffCLRec)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML property files")
    parser.add_argument("--result_file", default=None, help="write the run's summary to this JSON file")
    parser.add_argument("--verbose", action="store_true",
                        help="also print RecBole's full configuration, the dataset and the model (always in the log)")
    multi = parser.add_argument_group(
        "multi-process training (RecBole's torch.distributed: one GPU per process with nccl, CPUs with gloo)")
    multi.add_argument("--nproc", type=int, default=1, help="processes on this machine (default 1)")
    multi.add_argument("--world_size", type=int, default=-1, help="processes over all machines (default: --nproc)")
    multi.add_argument("--ip", default="localhost", help="address of the rank-0 machine (default localhost)")
    multi.add_argument("--port", default="5678", help="free port on the rank-0 machine (default 5678)")
    multi.add_argument("--offset", type=int, default=0, help="rank of this machine's first process (default 0)")
    parser.add_argument(
        "--resume", nargs="?", const="latest", default=None, metavar="PATH",
        help="continue the run saved in checkpoint PATH (a -last.pth or best .pth) exactly; without PATH: the "
        "newest checkpoint of the same model and dataset in checkpoint_dir. --key=value still overrides",
    )
    args, rest = parser.parse_known_args(argv)
    return args, parse_property_overrides(parser, rest)


def parse_property_overrides(
    parser: argparse.ArgumentParser, rest: list[str], reserved: Iterable[str] = (), reserved_fix: str = ""
) -> dict[str, str]:
    """``--name=value`` property overrides from the arguments argparse left over (values as strings,
    converted later exactly as RecBole converts its command line). ``reserved`` names may not be set."""
    from recbole_diffcl.errors import UserError

    overrides: dict[str, str] = {}
    for arg in rest:
        key, sep, value = arg[2:].partition("=")
        if not arg.startswith("--") or not sep or not key:
            parser.error(f"unrecognised argument '{arg}': properties are given as --name=value")
        if key in reserved:
            raise UserError(f"--{key} is set by {parser.prog} itself. Fix: drop --{key}{reserved_fix}.")
        overrides[key] = value
    return overrides


def config_file_list(text: Optional[str], absolute: bool = False) -> list[str]:
    """The files of a ``--config_files`` value (space separated, RecBole's convention); with ``absolute``
    as absolute paths (for runs started in other folders)."""
    files = text.split() if text else []
    return [os.path.abspath(f) for f in files] if absolute else files


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from recbole_diffcl.errors import exit_code_of
    from recbole_diffcl.quick_start import run, run_multiprocess

    def train() -> int:
        kwargs = dict(
            model=args.model,
            dataset=args.dataset,
            config_file_list=config_file_list(args.config_files) or None,
            config_dict=overrides,
            result_file=args.result_file,
            verbose=args.verbose,
            resume=args.resume,
        )
        if args.nproc != 1 or args.world_size > 0:
            distributed = dict(nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port)
            run_multiprocess(offset=args.offset, **distributed, **kwargs)
        else:
            run(**kwargs)
        return 0

    return exit_code_of(train, interrupted="interrupted")


