#!/usr/bin/env bash
# Builds llama.cpp's own llama-server from the exact llama.cpp source bundled inside node-llama-cpp,
# so benchmarks compare strongdoge with what users would run instead, on the same llama.cpp version
# (built for this CPU, as users build it).
# Output: .llama-build/bin/llama-server (about 5 minutes on 2 cores; offline).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bundle=node_modules/node-llama-cpp/llama/gitRelease.bundle
out=.llama-build
[ -f "$bundle" ] || { echo "missing $bundle: run npm ci first" >&2; exit 1; }

if [ ! -d "$out/src/.git" ]; then
    rm -rf "$out/src"
    git clone --quiet "$bundle" "$out/src"
fi
cmake -S "$out/src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF > "$out/cmake.log"
cmake --build "$out/build" --target llama-server -j "$(nproc)" > "$out/build.log"
mkdir -p "$out/bin"
cp "$out/build/bin/llama-server" "$out/bin/llama-server"
echo "built $root/$out/bin/llama-server"
