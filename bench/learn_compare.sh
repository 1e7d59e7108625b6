#!/usr/bin/env bash
# Online learners on the same ordered streams: evergreen vs VW, River and Keras
# (bench/learn_compare.py). Creates bench/.venv-learn from bench/learn_requirements.txt on first
# use (PyPI; tensorflow-cpu is large), then runs the script with the arguments given, e.g.
#   bench/learn_compare.sh --peers-only
#   bench/learn_compare.sh --streams elec2 --learners vw,evergreen
#   bench/learn_compare.sh --streams elec2,covertype100k --learners river_arf   (slow: ~500 ex/s)
#   bench/learn_compare.sh --learners evergreen --evergreen-runs forest
# Evergreen runs need `cargo build --release -p evergreen` first (target/release/evergreen).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$here/.venv-learn
req=$here/learn_requirements.txt
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$req"
    cp "$req" "$venv/.requirements"
fi
exec "$venv/bin/python" "$here/learn_compare.py" "$@"
