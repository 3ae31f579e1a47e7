#!/usr/bin/env python3
"""clang-tidy over many files, in parallel, skipping files already found clean.

Usage: clang-tidy-cached.py -p BUILD [--cache DIR] [--jobs N] FILE...
       [-- CLANG-TIDY-ARG...]

Runs `clang-tidy -p BUILD --quiet ARGS FILE` for each FILE (paths relative
to the current directory, which is the repository's top), as many at once
as there are CPUs, prints what they print (without clang-tidy's "N warnings
generated." counts) and exits 1 if any of them failed.

Why a cache: clang-tidy on the helper is most of `make lint` (about five
minutes on two cores), and a clean clone in CI has no build/ to remember
anything in.  A file found clean is recorded in DIR (by default
/var/cache/envcrypt/clang-tidy, shared by the clones of the host like
ccache's objects) under a digest of everything its result depends on:
clang-tidy's version, the .clang-tidy configuration, the arguments, and
the file as the compiler sees it, preprocessed by clang with its compile
command from BUILD/compile_commands.json and with its comments (so every
header it includes, every macro and every NOLINT is in the digest).  The repository's top directory is replaced
by "." in the command and in the preprocessor's line markers, so clones at
other paths share the entries.  Only clean results (exit 0, nothing
printed) are recorded: a file with findings runs again every time and
shows them.  A file whose
preprocessing fails is checked without the cache.
ENVCRYPT_TIDY_CACHE=0 turns the cache off.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

COUNT_LINE = re.compile(r"^\d+ warnings? generated\.$")


def compile_commands(build):
    with open(os.path.join(build, "compile_commands.json"), encoding="utf-8") as f:
        entries = json.load(f)
    commands = {}
    for entry in entries:
        path = os.path.normpath(os.path.join(entry["directory"], entry["file"]))
        args = entry.get("arguments") or shlex.split(entry["command"])
        commands[path] = (entry["directory"], args)
    return commands


def preprocessed(directory, args):
    """The translation unit as clang preprocesses it, or None."""
    cmd = ["clang++"]
    skip = False
    for arg in args[1:]:
        if skip:
            skip = False
        elif arg == "-o":
            skip = True
        elif arg != "-c":
            cmd.append(arg)
    # -C: comments stay, NOLINT ones among them.
    cmd += ["-E", "-C", "-Wno-unknown-warning-option", "-o", "-"]
    try:
        done = subprocess.run(cmd, cwd=directory, capture_output=True, check=False)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def digest(top, fixed, directory, args, text):
    """The cache key of one file's check."""
    top_bytes = top.encode()
    h = hashlib.sha256()
    h.update(fixed)
    h.update(json.dumps([a.replace(top, ".") for a in args]).encode())
    h.update(directory.replace(top, ".").encode())
    h.update(text.replace(top_bytes, b"."))
    return h.hexdigest()


def tidy(build, extra, path):
    done = subprocess.run(
        ["clang-tidy", "-p", build, "--quiet", *extra, path],
        capture_output=True, text=True, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [l for l in lines if not COUNT_LINE.match(l)]


def check_one(ctx, path):
    """(exit status, output lines, came from the cache) for one file."""
    key = None
    if ctx["cache"]:
        entry = ctx["commands"].get(os.path.abspath(path))
        if entry:
            text = preprocessed(*entry)
            if text is not None:
                key = digest(ctx["top"], ctx["fixed"], entry[0], entry[1], text)
                if os.path.exists(os.path.join(ctx["cache"], key[:2], key)):
                    return 0, [], True
    status, lines = tidy(ctx["build"], ctx["extra"], path)
    # Clean means no finding at all, not only none made an error.
    if status == 0 and not lines and key:
        record(ctx["cache"], key, path)
    return status, lines, False


def record(cache, key, path):
    folder = os.path.join(cache, key[:2])
    try:
        os.makedirs(folder, exist_ok=True)
        # Written whole, then renamed: a reader never sees half an entry.
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False) as f:
            f.write(path + "\n")
        os.replace(f.name, os.path.join(folder, key))
    except OSError as err:
        print(f"clang-tidy-cached: cannot record {path} in {cache}: {err}", file=sys.stderr)


def fixed_inputs(extra):
    version = subprocess.run(["clang-tidy", "--version"], capture_output=True,
                             check=False).stdout
    with open(".clang-tidy", "rb") as f:
        config = f.read()
    return version + b"\0" + config + b"\0" + json.dumps(extra).encode()


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", dest="build", required=True)
    parser.add_argument("--cache", default="/var/cache/envcrypt/clang-tidy")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("files", nargs="*")
    opts = parser.parse_args(argv)
    use_cache = os.environ.get("ENVCRYPT_TIDY_CACHE", "1") != "0"
    ctx = {
        "build": opts.build,
        "extra": extra,
        "top": os.getcwd(),
        "cache": opts.cache if use_cache else None,
        "commands": compile_commands(opts.build) if use_cache else {},
        "fixed": fixed_inputs(extra) if use_cache else b"",
    }
    failed = cached = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        for status, lines, hit in pool.map(lambda p: check_one(ctx, p), opts.files):
            failed += status != 0
            cached += hit
            for line in lines:
                print(line)
    print(f"clang-tidy-cached: {len(opts.files)} files, {cached} clean in the cache, "
          f"{len(opts.files) - cached} checked, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
