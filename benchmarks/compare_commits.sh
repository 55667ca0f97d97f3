#!/usr/bin/env bash
# Run the asv suite on two commits and print `asv compare` between them, building nothing but one small venv:
# each commit is exported (git archive) and installed without dependencies into a venv that shares this
# Python's site-packages (torch, numpy, scikit-learn, asv), so only pip's build tools may be fetched. The
# benchmark code is the working tree's for both commits (as in any asv run); results are recorded under each
# commit's hash in benchmarks/.asv/results. Options after the commits go to `asv run` (e.g. --quick -b KMeansFit).
#
#   benchmarks/compare_commits.sh BASE [HEAD] [asv run options]
set -euo pipefail
cd "$(dirname "$0")"
[[ $# -ge 1 ]] || { sed -n 2,8p "$0"; exit 2; }
base=$(git rev-parse --verify "$1^{commit}")
shift
head=HEAD
if [[ $# -gt 0 && $1 != -* ]]; then
    head=$1
    shift
fi
head=$(git rev-parse --verify "$head^{commit}")
asv machine --yes >/dev/null
# Fixed paths, under the git-ignored .asv/: asv files results by environment name, so both commits must run in
# the same environment for `asv compare` to pair them.
work=$PWD/.asv/compare
[[ -x $work/env/bin/python ]] || "${PYTHON:-python3}" -m venv --system-site-packages "$work/env"
for commit in "$base" "$head"; do
    rm -rf "$work/src" && mkdir -p "$work/src"
    git -C .. archive "$commit" | tar -x -C "$work/src"
    "$work/env/bin/python" -m pip install -q --no-deps --force-reinstall "$work/src"
    echo "== $commit: pixelkm from $(cd / && "$work/env/bin/python" -c 'import pixelkm; print(pixelkm.__file__)')"
    asv run -E "existing:$work/env/bin/python" --set-commit-hash="$commit" "$@"
done
asv compare --split --factor 1.1 "$base" "$head"
