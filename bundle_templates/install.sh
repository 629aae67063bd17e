#!/bin/sh
# install.sh: checks this airgap bundle with openssl, tar and coreutils only, installs airgap from
# the bundle into a virtualenv (offline), then hands over to `airgap install`, which verifies the
# whole bundle again. Read it before you run it:
#
#   tar -xf NAME-VERSION.airgap.tar bundle/install.sh        (v1; v2: see docs/bundle-format.md)
#   sh bundle/install.sh --key publisher.pub NAME-VERSION.airgap.tar [--prefix DIR] [--state-dir DIR]
#                        [--python PYTHON] [--verify-only] [-- ARGS for airgap install]
#
# ARGS may name another target than the virtualenv: -- --to kubernetes --registry HOST:PORT.
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

# 3. The whole archive, before anything is created: regular files only (no links or devices),
#    every name a plain path under bundle/ (no "..", nothing absolute), and nothing after the
#    end-of-archive marker (two zero blocks, padded with zeros to a multiple of 10240 bytes).
untar -tvR >"$WORK/list" 2>"$WORK/out" ||
    die 4 "$BUNDLE is not a readable tar archive: $(head -n1 "$WORK/out")"
sed '$d' "$WORK/list" >"$WORK/members"
if grep -qv '^block [0-9]*: -' "$WORK/members"; then
    die 3 "the bundle holds something other than a regular file: $(grep -v '^block [0-9]*: -' "$WORK/members" | head -n1)"
fi
untar -t >"$WORK/names" 2>"$WORK/out" || die 4 "$BUNDLE is not a readable tar archive: $(head -n1 "$WORK/out")"
SAFE='^bundle/[A-Za-z0-9_+@=,~][A-Za-z0-9._+@=,~-]*(/[A-Za-z0-9_+@=,~][A-Za-z0-9._+@=,~-]*)*$'
if grep -Evq "$SAFE" "$WORK/names" || grep -Eq '(^|/)\.\.?(/|$)' "$WORK/names"; then
    die 3 "the bundle has a member name that could escape or confuse:" \
        "$(grep -Ev "$SAFE" "$WORK/names" | head -n1)$(grep -E '(^|/)\.\.?(/|$)' "$WORK/names" | head -n1)"
fi
# The four control files come first, in this order, and exactly once each: step 5 sets their
# lines aside by name, so a second copy further on would go unchecked.
printf '%s\n' bundle/manifest.json bundle/manifest.json.sig bundle/SHA256SUMS bundle/SHA256SUMS.sig >"$WORK/control"
[ "$(head -n1 "$WORK/names")" = bundle/manifest.json ] ||
    die 4 "$BUNDLE is not an airgap bundle: it does not start with bundle/manifest.json"
head -n4 "$WORK/names" | cmp -s - "$WORK/control" ||
    die 3 "the bundle's control files are out of order: $(head -n4 "$WORK/names" | tr '\n' ' ')"
if sed 1,4d "$WORK/names" | grep -qxF -f "$WORK/control"; then
    die 3 "a control file appears twice in the bundle: $(sed 1,4d "$WORK/names" | grep -xF -f "$WORK/control" | head -n1)"
fi
END=$(sed -n '$s/^block \([0-9]*\): \*\* Block of NULs \*\*$/\1/p' "$WORK/list")
[ -n "$END" ] || die 3 "the bundle is truncated: it has no end-of-archive marker"
WANT=$(((END + 2) * 512 + 10239))
WANT=$((WANT - WANT % 10240))
if [ -n "$INDEX" ]; then
    HAVE=0
    cut -c67- "$INDEX" >"$WORK/parts"
    while read -r part; do
        HAVE=$((HAVE + $(wc -c <"$(dirname "$INDEX")/$part")))
    done <"$WORK/parts"
else
    HAVE=$(wc -c <"$BUNDLE")
fi
[ "$HAVE" -le "$WANT" ] || die 3 "data follows the end of the archive: $((HAVE - WANT)) bytes were appended to the bundle"
[ "$HAVE" -eq "$WANT" ] || die 3 "the bundle is truncated: $HAVE bytes, its archive needs $WANT"

# 4. The control files; the manifest and SHA256SUMS are signed by KEY.
untar -x -C "$WORK" --no-same-owner --no-same-permissions -T "$WORK/control" 2>/dev/null || : # checked below
for f in manifest.json manifest.json.sig SHA256SUMS SHA256SUMS.sig; do
    [ -f "$B/$f" ] || die 4 "$BUNDLE is not an airgap bundle: it has no bundle/$f"
done
check_sig "$B/manifest.json"
check_sig "$B/SHA256SUMS"
# Format v2 stores each content once, as bundle/blobs/sha256/HASH; the signed manifest's files[]
# maps each path to its HASH. Canonical JSON has one spelling, so sed reads that map as
# "HASH  PATH" lines (files[] is the list just before "format").
V2=''
if grep -q '"format":"airgap\.bundle/v2"' "$B/manifest.json"; then
    V2=yes
    sed -n 's/.*"files":\[\(.*\)\],"format":"airgap\.bundle\/v2".*/\1/p' "$B/manifest.json" |
        grep -o '"path":"[^"]*","sha256":"[0-9a-f]\{64\}"' |
        sed 's/^"path":"\([^"]*\)","sha256":"\([0-9a-f]*\)"$/\2  \1/' >"$WORK/paths"
else
    untar -x -C "$WORK" --no-same-owner --no-same-permissions bundle/install.sh 2>/dev/null || :
    [ -f "$B/install.sh" ] || die 4 "$BUNDLE is not an airgap bundle: it has no bundle/install.sh"
fi

# 5. Every member's SHA-256, in one streaming pass (nothing is written to disk), is exactly what
#    the signed SHA256SUMS lists: nothing changed, missing, unlisted or twice. SHA256SUMS itself and
#    its signature are covered by the signature just checked.
tar --version 2>/dev/null | grep -q 'GNU tar' || die 5 "this script needs GNU tar (for --to-command)"
# shellcheck disable=SC2016 # expanded by the shell tar starts for each member, not here
untar -x --to-command='printf "%s  %s\n" "$(sha256sum | cut -c1-64)" "${TAR_FILENAME#bundle/}"' \
    >"$WORK/hashes" 2>"$WORK/out" || die 3 "the bundle cannot be read to its end: $(head -n1 "$WORK/out")"
grep -Ev '  SHA256SUMS(\.sig)?$' "$WORK/hashes" | LC_ALL=C sort >"$WORK/got"
LC_ALL=C sort "$B/SHA256SUMS" >"$WORK/want"
if ! cmp -s "$WORK/got" "$WORK/want"; then
    bad=$(LC_ALL=C comm -3 "$WORK/got" "$WORK/want" | sed 's/^[[:space:]]*//' | head -n1 | cut -c67-)
    case $bad in blobs/sha256/*)
        users=$(grep -F "$(printf '%s' "$bad" | cut -c14-77)  " "$WORK/paths" | cut -c67- | head -n3 | tr '\n' ' ')
        bad="$bad (the content of ${users% })" ;;
    esac
    die 3 "a file does not match the signed SHA256SUMS: $bad: FAILED (changed, missing, unlisted or twice)"
fi
if [ -n "$V2" ]; then
    # v2: the signed manifest gives each file's hash, and every blob matched it above.
    SIGNED_SCRIPT=$(sed -n 's/^\([0-9a-f]\{64\}\)  install\.sh$/\1/p' "$WORK/paths")
    FILES=$WORK/paths
else
    SIGNED_SCRIPT=$(sha256sum <"$B/install.sh" | cut -c1-64)
    FILES=$B/SHA256SUMS
fi
[ "$(sha256sum <"$0" | cut -c1-64)" = "$SIGNED_SCRIPT" ] ||
    die 3 "$0 is not the install.sh signed in this bundle: extract it again and read it"
grep -Eq '^[0-9a-f]{64}  airgap/requirements\.lock$' "$FILES" ||
    die 4 "this bundle does not carry airgap (built without a target profile, or for a Python that" \
        "cannot run airgap: see build.json): install airgap, then run airgap install"
say "verified: manifest and SHA256SUMS signed by $KEY_ID; all $(wc -l <"$WORK/want") files match"

# 6. Only now extract what this script uses (airgap's wheels), and check them again as extracted:
#    the media could have changed since the pass above.
grep -E '^[0-9a-f]{64}  airgap/' "$FILES" >"$WORK/ours"
if [ -n "$V2" ]; then
    # v2: airgap's files are blobs; extract those, then lay each out under its path (a hard link).
    cut -c1-64 "$WORK/ours" | sort -u | sed 's|^|bundle/blobs/sha256/|' >"$WORK/blobs"
    untar -x -C "$WORK" --no-same-owner --no-same-permissions -T "$WORK/blobs" 2>"$WORK/out" ||
        die 3 "the bundle changed while it was read, or stores airgap compressed: $(head -n1 "$WORK/out")"
    if grep -Eq '(^|/)\.\.?(/|$)' "$WORK/ours"; then
        die 3 "the manifest names a path that could escape: $(grep -E '(^|/)\.\.?(/|$)' "$WORK/ours" | head -n1)"
    fi
    while read -r hash path; do
        if ! { mkdir -p "$B/$(dirname "$path")" && ln -f "$B/blobs/sha256/$hash" "$B/$path"; }; then
            die 5 "cannot lay out $path in $WORK"
        fi
    done <"$WORK/ours"
else
    untar -x -C "$WORK" --no-same-owner --no-same-permissions bundle/airgap 2>"$WORK/out" ||
        die 3 "the bundle changed while it was read: $(head -n1 "$WORK/out")"
fi
(cd "$B" && sha256sum --quiet --strict -c "$WORK/ours") >"$WORK/out" 2>&1 ||
    die 3 "a file does not match the signed SHA256SUMS: $(head -n1 "$WORK/out")"

# 7. airgap into a fresh virtualenv (replacing one an earlier run left there), from the bundle's
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

# 8. Trust the key, then airgap verifies the whole bundle (and installs it), with its state (trust
#    store, audit log, installed versions) in --state-dir when one was given.
if [ -n "$STATE" ]; then
    AIRGAP_STATE_DIR=$STATE
    export AIRGAP_STATE_DIR
    say "state directory $STATE"
fi
"$PREFIX/venv/bin/airgap" keys trust "$KEY" ${STATE:+--state-dir "$STATE"}
if [ "$MODE" = verify ]; then
    "$PREFIX/venv/bin/airgap" verify "$BUNDLE" ${STATE:+--state-dir "$STATE"} "$@"
else
    # --to venv unless the arguments for airgap install name another target (-- --to kubernetes ...).
    TO="--to venv"
    for arg in "$@"; do
        case $arg in --to | --to=*) TO="" ;; esac
    done
    # shellcheck disable=SC2086 # TO is empty or two words on purpose
    "$PREFIX/venv/bin/airgap" install "$BUNDLE" $TO ${STATE:+--state-dir "$STATE"} "$@"
fi
