#!/usr/bin/env bash
# Runs each fuzz target for a while (default 60 s each). Not part of CI.
#
#   scripts/fuzz.sh [seconds] [target...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain for the sanitizer flags
# (nightly is what was used). Without nightly it falls back to stable with RUSTC_BOOTSTRAP=1,
# which lets stable accept the -Z flags (not tried here).
# Crashes land in fuzz/artifacts/<target>/; reproduce one with
# `cargo +nightly fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/crash-...`.
# New corpus entries go to fuzz/corpus/<target>/ (ignored by git); fuzz/seeds/<target>/ holds
# the committed starting inputs.
set -euo pipefail

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config token cookies_headers)
fi

cd "$(dirname "$0")/.."

if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi

# A target dir of its own: sanitizer builds never mix with the normal build.
target_dir="${CARGO_TARGET_DIR:-target}/fuzz"

for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    seeds=()
    if [ -d "fuzz/seeds/$t" ]; then
        seeds=("fuzz/seeds/$t")
    fi
    dict=()
    if [ -f "fuzz/dict/$t.dict" ]; then
        dict=("-dict=fuzz/dict/$t.dict")
    fi
    echo "== $t: ${seconds}s"
    cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$t" \
        "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 "${dict[@]}" \
        -print_final_stats=1
done
