#!/bin/bash
# libtorch for a model host (watch, the desk, the pipeline): the same PyPI wheel the build
# linked (torch==2.11.0, what tch 0.24 expects), in a venv of its own, and the environment
# file the model units read (EnvironmentFile=/etc/flagship/libtorch.env).
#
#   sudo deploy/install-libtorch.sh                       # /opt/flagship/venv, /etc/flagship/libtorch.env
#   deploy/install-libtorch.sh PREFIX ENV_FILE            # anywhere (a clean folder, a test)
#
# The binary needs no rebuild: its RUNPATH names the build machine's venv, and LD_LIBRARY_PATH
# (searched before RUNPATH) points it at this one. The path is torch/lib's real path, not a
# link: libtorch_cuda finds the CUDA libraries of the wheel's nvidia-* packages relative to it
# ($ORIGIN/../../nvidia), which a CPU-only server needs too, to load it.
set -euo pipefail
umask 022   # the `flagship` user reads the venv
prefix=${1:-/opt/flagship}
env_file=${2:-/etc/flagship/libtorch.env}
torch=${TORCH:-torch==2.11.0}
python=${PYTHON:-python3}

"$python" -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install --quiet --disable-pip-version-check "$torch"
lib=$("$prefix/venv/bin/python" -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib")))')
test -f "$lib/libtorch_cpu.so"
mkdir -p "$(dirname "$env_file")"
printf 'LD_LIBRARY_PATH=%s\n' "$lib" > "$env_file.new"
chmod 0644 "$env_file.new"
mv "$env_file.new" "$env_file"
echo "libtorch: $lib"
echo "wrote $env_file"
