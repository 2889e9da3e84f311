#!/usr/bin/env bash
# deps.sh — install the Debian packages the tests use, if any is missing.
# Runs apt-get only as root and only when something is absent, so `make test`
# on a prepared machine does not touch the network.
set -euo pipefail
need=()
for pair in fusermount3:fuse3 umoci:umoci skopeo:skopeo pigz:pigz zstd:zstd perl:perl \
            setfattr:attr setcap:libcap2-bin busybox:busybox-static runc:runc crun:crun podman:podman \
            docker-registry:docker-registry htpasswd:apache2-utils zsh:zsh tmux:tmux \
            containerd:containerd ctr:containerd; do
    bin=${pair%%:*} pkg=${pair##*:}
    command -v "$bin" >/dev/null 2>&1 || [ -x "/bin/$bin" ] || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    echo "deps.sh: integration tests will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${need[@]}"
