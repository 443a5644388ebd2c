# Source (bash) to point podman at tickrun's settings:
#     source deploy/images/podman-env.sh
# Exports CONTAINERS_CONF (runc, cgroupfs, host netns, ulimits: see containers.conf),
# CONTAINERS_STORAGE_CONF (private overlay store under the tickrun cache, generated on first
# use) and TICKRUN_BASE_IMAGE. Anything that runs podman for tickrun (tests, controller, demo)
# must use the same three values, or it will not see the base image.
# shellcheck shell=bash

_tickrun_images_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="$_tickrun_images_dir/containers.conf"
export CONTAINERS_STORAGE_CONF="${TICKRUN_CACHE:-$HOME/.cache/tickrun}/peers/podman/storage.conf"
"$_tickrun_images_dir/gen-storage-conf.sh" "$CONTAINERS_STORAGE_CONF"
TICKRUN_BASE_IMAGE="$(sed -n 's/^BASE_IMAGE=//p' "$_tickrun_images_dir/../peers/versions.env")"
export TICKRUN_BASE_IMAGE
unset _tickrun_images_dir
