#!/usr/bin/env bash
# Runs each fuzz target for a while (default 60 s each). Not part of CI.
#
#   scripts/fuzz.sh [seconds] [target...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz passes nightly-only -Z flags
# (sanitizer, coverage instrumentation): with a nightly toolchain installed it is used; without
# one the script runs stable with RUSTC_BOOTSTRAP=1, which accepts them (that is how the
# HTTP/1.1 targets were run; figures in README "Fuzzing").
# Crashes land in fuzz/artifacts/<target>/; reproduce one with
# `cargo +nightly fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/crash-...` (on stable:
# `RUSTC_BOOTSTRAP=1 cargo fuzz run ...` with the same arguments).
# New corpus entries go to fuzz/corpus/<target>/ (ignored by git); fuzz/seeds/<target>/ holds
# the committed starting inputs.
set -euo pipefail

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config token cookies_headers h1_request_head upstream_response chunked h1_differential)
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
