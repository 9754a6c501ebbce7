#!/bin/sh
# mutate.sh [MUTANTS_FILE] [ID...] -- the project's own mutation run (make mutate).
#
# Each mutant of spec/mutants.txt (a file, an exact text in it, its replacement,
# and the test files that must catch it) is applied alone to a scratch copy of
# this tree (its build/ copied along, so each build is incremental), built, and
# its test files are run one by one, each within MUTATE_TIME seconds (default
# 120): a failure, or a file that runs out of time, catches the mutant. Prints
# caught / survived / "no build" per mutant, then the score; exits 1 if any
# survived. IDs (or shell patterns of them) run only those mutants.
#
# The scratch copy is $TMPDIR/farm-mutate.XXXXXX, removed at the end (KEEP=1
# keeps it). Nothing in this tree is changed.
set -eu
cd "$(dirname "$0")/.."
exec lua5.4 scripts/mutate.lua "$@"
