#!/bin/sh
# install.sh: checks this airgap bundle with openssl, tar and coreutils only, installs airgap from
# the bundle into a virtualenv (offline), then hands over to `airgap install`, which verifies the
# whole bundle again. Read it before you run it:
#
#   tar -xf NAME-VERSION.airgap.tar bundle/install.sh
#   sh bundle/install.sh --key publisher.pub NAME-VERSION.airgap.tar [--prefix DIR] [--state-dir DIR]
#                        [--python PYTHON] [--verify-only] [-- ARGS for airgap install]
#
# A split bundle is named by its index, NAME-VERSION.airgap.tar.parts.sha256, with its parts beside
# it. --prefix: where the venv goes (default ~/.local/share/airgap/runtime, /opt/airgap for root).
# --verify-only: run `airgap verify` instead of `airgap install --to venv`.
# Exit codes: 2 usage, 3 integrity or trust failure (never retry), 4 not a usable bundle,
# 5 environment (missing tool, venv or pip failed); after that, airgap's own exit code.
set -eu

say() { printf 'install.sh: %s\n' "$*"; }
die() { code=$1; shift; printf 'install.sh: %s\n' "$*" >&2; exit "$code"; }
abs() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }

KEY='' BUNDLE='' STATE='' PREFIX='' PY=python3 MODE=install
while [ $# -gt 0 ]; do
    case $1 in --key | --prefix | --state-dir | --python) [ $# -ge 2 ] || die 2 "$1 needs a value" ;; esac
    case $1 in
        --key) KEY=$(abs "$2"); shift ;;
        --prefix) PREFIX=$(abs "$2"); shift ;;
        --state-dir) STATE=$(abs "$2"); shift ;;
        --python) PY=$2; shift ;;
        --verify-only) MODE=verify ;;
        -h | --help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
        --) shift; break ;;
        -*) die 2 "unknown option $1 (see --help)" ;;
        *) [ -z "$BUNDLE" ] || die 2 "one bundle only, not $BUNDLE and $1"; BUNDLE=$(abs "$1") ;;
    esac
    shift
done
if [ -z "$KEY" ] || [ -z "$BUNDLE" ]; then
    die 2 "usage: sh install.sh --key PUBLISHER.pub BUNDLE.airgap.tar (see --help)"
fi
if [ -z "$PREFIX" ] && [ "$(id -u)" -eq 0 ]; then
    PREFIX=/opt/airgap
elif [ -z "$PREFIX" ]; then
    PREFIX=${HOME:?set HOME or pass --prefix}/.local/share/airgap/runtime
fi
for tool in openssl tar sha256sum base64 "$PY"; do
    command -v "$tool" >/dev/null || die 5 "$tool is not installed"
done
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die 5 "$PY is older than Python 3.9"

# 1. The publisher's key: print its id (SHA-256 of the DER public key) to compare out of band.
openssl pkey -pubin -in "$KEY" -noout 2>/dev/null || die 4 "$KEY is not a PEM public key"
KEY_ID=$(openssl pkey -pubin -in "$KEY" -outform DER | sha256sum | cut -d' ' -f1)
say "publisher key $KEY, key id $KEY_ID"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/airgap-install.XXXXXX") || die 5 "cannot create a temporary directory"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
B=$WORK/bundle

# check_sig FILE: FILE.sig is the base64 DER ECDSA P-384/SHA-384 signature of FILE by KEY.
check_sig() {
    if ! base64 -d "$1.sig" >"$WORK/sig.der" 2>/dev/null ||
        ! openssl dgst -sha384 -verify "$KEY" -signature "$WORK/sig.der" "$1" >/dev/null 2>&1; then
        die 3 "$(basename "$1") is not signed by key $KEY_ID: refusing the bundle"
    fi
}

# 2. A split bundle: the signed index names every part and its hash; tar reads the parts joined.
INDEX=''
case $BUNDLE in *.parts.sha256)
    INDEX=$BUNDLE
    [ -f "$INDEX.sig" ] || die 4 "no signature $INDEX.sig beside the parts index"
    check_sig "$INDEX"
    (cd "$(dirname "$INDEX")" && sha256sum --quiet --strict -c "$(basename "$INDEX")") >"$WORK/out" 2>&1 ||
        die 3 "a part of the split bundle is missing or altered: $(head -n1 "$WORK/out")"
    ;;
esac
untar() {
    if [ -n "$INDEX" ]; then
        (cd "$(dirname "$INDEX")" && cut -c67- "$INDEX" | while read -r part; do cat "./$part"; done) |
            tar -f - "$@"
    else
        tar -f "$BUNDLE" "$@"
    fi
}

# 3. Regular files only (no links or devices), then extract just what this script uses.
untar -tv >"$WORK/list" 2>"$WORK/out" ||
    die 4 "$BUNDLE is not a readable tar archive: $(head -n1 "$WORK/out")"
if grep -qv '^-' "$WORK/list"; then
    die 3 "the bundle holds something other than a regular file: $(grep -v '^-' "$WORK/list" | head -n1)"
fi
untar -x -C "$WORK" --no-same-owner --no-same-permissions bundle/manifest.json bundle/manifest.json.sig \
    bundle/SHA256SUMS bundle/SHA256SUMS.sig bundle/install.sh bundle/airgap 2>/dev/null || : # checked below
for f in manifest.json manifest.json.sig SHA256SUMS SHA256SUMS.sig install.sh; do
    [ -f "$B/$f" ] || die 4 "$BUNDLE is not an airgap bundle: it has no bundle/$f"
done

# 4. The manifest and SHA256SUMS are signed by KEY.
check_sig "$B/manifest.json"
check_sig "$B/SHA256SUMS"

# 5. The extracted files have the hashes SHA256SUMS lists, nothing unlisted came with them, and
#    this script is the one the publisher signed.
grep -Eq '^[0-9a-f]{64}  airgap/requirements\.lock$' "$B/SHA256SUMS" ||
    die 4 "this bundle does not carry airgap (built without a target profile, or for a Python that" \
        "cannot run airgap: see build.json): install airgap, then run airgap install"
grep -E '^[0-9a-f]{64}  (airgap/.*|install\.sh)$' "$B/SHA256SUMS" >"$WORK/ours"
(cd "$B" && sha256sum --quiet --strict -c "$WORK/ours") >"$WORK/out" 2>&1 ||
    die 3 "a file does not match the signed SHA256SUMS: $(head -n1 "$WORK/out")"
sed -n 's|^-.* bundle/\(airgap/.*\)$|\1|p; s|^-.* bundle/\(install\.sh\)$|\1|p' "$WORK/list" |
    sort >"$WORK/have"
[ "$(cut -c67- "$WORK/ours" | sort)" = "$(cat "$WORK/have")" ] ||
    die 3 "the archive holds files under bundle/airgap/ that the signed SHA256SUMS does not list"
[ "$(sha256sum <"$0")" = "$(sha256sum <"$B/install.sh")" ] ||
    die 3 "$0 is not the install.sh signed in this bundle: extract it again and read it"
say "verified: manifest and SHA256SUMS signed by $KEY_ID;" \
    "$(wc -l <"$WORK/ours") files (airgap's wheels and this script)"

# 6. airgap into a fresh virtualenv (replacing one an earlier run left there), from the bundle's
#    hash-locked wheels only: no index, no network.
mkdir -p "$PREFIX" 2>/dev/null || die 5 "cannot create $PREFIX (choose another with --prefix)"
"$PY" -m venv --clear "$PREFIX/venv" >"$WORK/out" 2>&1 ||
    die 5 "$PY -m venv $PREFIX/venv failed: $(tail -n1 "$WORK/out")" \
        "(on Debian/Ubuntu: apt install python3-venv)"
"$PREFIX/venv/bin/python" -m pip install --quiet --isolated --no-index --no-cache-dir --require-hashes \
    --disable-pip-version-check --find-links "$B/airgap/wheels" -r "$B/airgap/requirements.lock" \
    >"$WORK/out" 2>&1 ||
    die 5 "pip could not install airgap into $PREFIX/venv: $(grep ERROR "$WORK/out" | tail -n1)" \
        "(was the bundle built for this host's $PY? see --python)"
say "$(sed -n 's/^\(airgap==[^ ]*\).*/\1/p' "$B/airgap/requirements.lock") installed in $PREFIX/venv"

# 7. Trust the key, then airgap verifies the whole bundle (and installs it).
"$PREFIX/venv/bin/airgap" keys trust "$KEY" ${STATE:+--state-dir "$STATE"}
if [ "$MODE" = verify ]; then
    "$PREFIX/venv/bin/airgap" verify "$BUNDLE" ${STATE:+--state-dir "$STATE"} "$@"
else
    "$PREFIX/venv/bin/airgap" install "$BUNDLE" --to venv ${STATE:+--state-dir "$STATE"} "$@"
fi
