#!/usr/bin/env bash
# docs/cli.md is the tool's --help texts (scripts/gen-cli-doc.sh): regenerate it
# and compare, and check that every long option the command files accept
# (their getopt tables) is documented there.
set -euo pipefail
T="$ML_TMP/cli_doc"
rm -rf "$T"; mkdir -p "$T"
bash scripts/gen-cli-doc.sh "$BUILD" > "$T/cli.md"
if ! cmp -s "$T/cli.md" docs/cli.md; then
    diff docs/cli.md "$T/cli.md" | head -40
    echo "docs/cli.md differs from --help: run scripts/gen-cli-doc.sh > docs/cli.md"
    exit 1
fi
echo "ok  docs/cli.md equals the --help texts"
opts=$(grep -hoE '\{"[a-z0-9-]+", *(required_argument|no_argument|optional_argument|[0-2]),' tools/*.c |
       sed -E 's/\{"([a-z0-9-]+)".*/\1/' | sort -u)
[ "$(echo "$opts" | wc -l)" -gt 50 ] || { echo "found only $(echo "$opts" | wc -l) options in tools/"; exit 1; }
missing=""
for o in $opts; do grep -qE -- "--$o([^a-z0-9-]|$)" docs/cli.md || missing="$missing --$o"; done
[ -z "$missing" ] || { echo "options accepted but not in --help / docs/cli.md:$missing"; exit 1; }
echo "ok  all $(echo "$opts" | wc -l) long options of tools/*.c are documented"
