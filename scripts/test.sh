#!/bin/sh
# test.sh [BUILD_DIR] -- every test, as TAP through prove: the C tests in
# BUILD_DIR/tests and the busted specs in spec/ (under Lua 5.4, against the
# build's farm.so and farm executable). Ends with prove's count of tests.
# Further arguments name test files to run instead of all of them.
set -eu
B=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."
export FARM_BUILD="$PWD/$B"
export FARM_EXE="$PWD/$B/farm"
export LUA_CPATH="$PWD/$B/?.so;;"
export LUA_PATH="$PWD/spec/?.lua;;"
if [ $# -gt 0 ]; then
  exec prove -v --exec "$PWD/scripts/run-test" "$@"
fi
tests=$(ls "$B"/tests/* 2>/dev/null || true)
exec prove --timer --exec "$PWD/scripts/run-test" $tests spec/*_spec.lua
