"""List, locate or copy the shipped BasicSR option files and MMagic configs (they live inside the installed package).

    python -m ssl_plugin.tools.options list
    python -m ssl_plugin.tools.options path mmagic/ssl_basicvsr_demo.py     # e.g. for mmagic's tools/train.py
    python -m ssl_plugin.tools.options copy my_options/                     # to edit them
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..resources import find_option_file, option_files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m ssl_plugin.tools.options', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='action', required=True)
    sub.add_parser('list', help='name and path of every shipped file')
    p = sub.add_parser('path', help='the path of one shipped file')
    p.add_argument('name', help='e.g. ssl_basicvsr_demo.yml or mmagic/ssl_basicvsr_demo.py')
    c = sub.add_parser('copy', help='copy every shipped file into a folder (the MMagic configs into DEST/mmagic)')
    c.add_argument('dest')
    args = parser.parse_args(argv)
    files = option_files()
    if not files:
        raise SystemExit('error: this ssl_plugin has no shipped option files (a broken installation?)')
    if args.action == 'list':
        for name, path in files.items():
            print(f'{name:40s} {path}')
    elif args.action == 'path':
        path = find_option_file(args.name)
        if path is None:
            raise SystemExit(f'error: no shipped option file {args.name!r}; shipped: {", ".join(files)}')
        print(path)
    else:
        dest = Path(args.dest)
        for name, path in files.items():
            target = dest / name
            if target.exists():
                raise SystemExit(f'error: {target} exists; copy into an empty folder')
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        print(f'copied {len(files)} files into {dest}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
