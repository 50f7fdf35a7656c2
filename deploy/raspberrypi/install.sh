#!/usr/bin/env bash
# Kassabro installer for Raspberry Pi OS (Bookworm, Trixie) and Debian: arm64, armhf, x86_64.
#
#   sudo ./install.sh [install]     first install; run again, it changes nothing
#   sudo ./install.sh upgrade       new venv from the source, checked, swapped in; rollback on failure
#   sudo ./install.sh uninstall     removes the program; keeps config and data
#   sudo ./install.sh uninstall --purge   ... and the config, data, spool and user
#
# Options:
#   --source DIR     the Kassabro source tree (default: the tree holding this script)
#   --root DIR       install under DIR instead of / (for tests and staging): no apt,
#                    no useradd/chown, no systemctl; paths in the written config and
#                    unit point inside DIR so the staged agent can run from there
#   --no-systemctl   do not call systemctl (no daemon-reload, enable, start, stop)
#   --no-apt         do not install Debian packages (also: KASSABRO_NO_APT=1)
#   --no-journal     do not build systemd-python (logs still reach the journal via stderr)
#   --purge          with uninstall: also remove config, data, spool and the user
#
# Environment: KASSABRO_PYTHON (default python3), KASSABRO_PIP_ARGS (extra pip
# arguments, e.g. "--no-index --find-links /media/usb/wheels" for an offline install).
#
# Layout:
#   /opt/kassabro/releases/<id>/   one venv per install or upgrade (the current and the previous kept)
#   /opt/kassabro/venv             symlink to the current release (the unit runs venv/bin/kassabro)
#   /etc/kassabro/                 kassabro.toml (root:kassabro 0640), *.token (kassabro 0600)
#   /var/lib/kassabro/             the outbox (kassabro:kassabro 0750)
#   /var/spool/kassabro/           spool for the till integration (kassabro:kassabro-spool 2770)
#   /usr/local/bin/kassabro        the CLI; run as root it switches to the kassabro user
set -Eeuo pipefail
# A root shell with umask 077 would make the venv unreadable for the service user.
umask 022

readonly SERVICE_USER=kassabro
readonly SPOOL_GROUP=kassabro-spool
readonly APT_PACKAGES=(python3 python3-venv python3-dev libsystemd-dev pkg-config gcc sqlite3 ca-certificates)
readonly JOURNAL_BUILD_PACKAGES=(python3-dev libsystemd-dev pkg-config gcc)

ACTION=install
ROOT=""
SOURCE=""
PURGE=0
USE_SYSTEMCTL=1
USE_APT=1
USE_JOURNAL=1
PYTHON="${KASSABRO_PYTHON:-python3}"
[[ "${KASSABRO_NO_APT:-0}" == 1 ]] && USE_APT=0

say() { printf '%s\n' "kassabro-install: $*"; }
warn() { printf '%s\n' "kassabro-install: WARNING: $*" >&2; }
die() {
    printf '%s\n' "kassabro-install: ERROR: $*" >&2
    exit 1
}
usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

parse_args() {
    while (($#)); do
        case "$1" in
            install | upgrade | uninstall) ACTION="$1" ;;
            --purge) PURGE=1 ;;
            --root)
                [[ $# -ge 2 ]] || die "--root needs a directory"
                ROOT="$2"
                shift
                ;;
            --root=*) ROOT="${1#--root=}" ;;
            --source)
                [[ $# -ge 2 ]] || die "--source needs a directory"
                SOURCE="$2"
                shift
                ;;
            --source=*) SOURCE="${1#--source=}" ;;
            --no-systemctl) USE_SYSTEMCTL=0 ;;
            --no-apt) USE_APT=0 ;;
            --no-journal) USE_JOURNAL=0 ;;
            -h | --help) usage ;;
            *)
                printf '%s\n' "kassabro-install: unknown argument: $1" >&2
                usage
                ;;
        esac
        shift
    done
    if [[ -n "$ROOT" ]]; then
        mkdir -p "$ROOT"
        ROOT="$(cd "$ROOT" && pwd)"
        USE_APT=0
        USE_SYSTEMCTL=0
    fi
    if [[ -z "$SOURCE" ]]; then
        SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    fi
    SOURCE="$(cd "$SOURCE" && pwd)" || die "--source $SOURCE is not a directory"
    readonly ACTION ROOT SOURCE PURGE USE_SYSTEMCTL USE_APT USE_JOURNAL

    OPT_DIR="$ROOT/opt/kassabro"
    RELEASES_DIR="$OPT_DIR/releases"
    VENV_LINK="$OPT_DIR/venv"
    ETC_DIR="$ROOT/etc/kassabro"
    CONFIG="$ETC_DIR/kassabro.toml"
    DATA_DIR="$ROOT/var/lib/kassabro"
    SPOOL_DIR="$ROOT/var/spool/kassabro"
    UNIT_DIR="$ROOT/etc/systemd/system"
    UNIT="$UNIT_DIR/kassabro.service"
    readonly OPT_DIR RELEASES_DIR VENV_LINK ETC_DIR CONFIG DATA_DIR SPOOL_DIR UNIT_DIR UNIT
}

# True when running against the real system (not --root): only then do we
# create users, chown files and talk to systemd.
real_system() { [[ -z "$ROOT" ]]; }

require_root() {
    if real_system && [[ "$(id -u)" != 0 ]]; then
        die "run as root: sudo $0 $ACTION"
    fi
}

check_platform() {
    local arch
    arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
    case "$arch" in
        arm64 | aarch64 | armhf | armv7l | amd64 | x86_64) ;;
        *) warn "untested architecture $arch; continuing" ;;
    esac
    [[ -f "$SOURCE/pyproject.toml" && -d "$SOURCE/agent" ]] ||
        die "$SOURCE does not look like the Kassabro source (no pyproject.toml and agent/)"
    [[ -f "$SOURCE/systemd/kassabro.service" ]] || die "missing $SOURCE/systemd/kassabro.service"
    [[ -f "$SOURCE/deploy/raspberrypi/kassabro.toml" ]] || die "missing $SOURCE/deploy/raspberrypi/kassabro.toml"
}

install_apt_packages() {
    if ((USE_APT == 0)); then
        say "skipping Debian packages (--no-apt or --root)"
        return
    fi
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if ((USE_JOURNAL == 0)) && [[ " ${JOURNAL_BUILD_PACKAGES[*]} " == *" $pkg "* ]]; then
            continue
        fi
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

check_python() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (install python3)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "Kassabro needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
        die "$PYTHON cannot make a venv: install python3-venv (apt-get install python3-venv)"
}

ensure_accounts() {
    if ! real_system; then
        return
    fi
    if ! getent group "$SPOOL_GROUP" >/dev/null; then
        groupadd --system "$SPOOL_GROUP"
        say "created group $SPOOL_GROUP (add the till integration's user to it to use the spool)"
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/kassabro --no-create-home \
            --shell /usr/sbin/nologin --comment "Kassabro till bridge" "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
}

# ensure_dir PATH MODE OWNER:GROUP: create or fix a directory. Ownership only on the real system.
ensure_dir() {
    local path="$1" mode="$2" owner="$3"
    mkdir -p "$path"
    # chown before chmod: a chown may clear set-id bits.
    if real_system; then chown "$owner" "$path"; fi
    chmod "$mode" "$path"
}

# ensure_file_mode PATH MODE OWNER:GROUP
ensure_file_mode() {
    local path="$1" mode="$2" owner="$3"
    if real_system; then chown "$owner" "$path"; fi
    chmod "$mode" "$path"
}

# write_if_changed SRC DEST MODE: copy only when the content differs; prints whether it did.
write_if_changed() {
    local src="$1" dest="$2" mode="$3" tmp
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
        chmod "$mode" "$dest"
        return 1
    fi
    tmp="$(mktemp "$dest.XXXXXX")"
    cat "$src" >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
    return 0
}

# The sed program that moves absolute paths under --root, so the staged files agree with each other.
root_paths_sed() {
    if real_system; then
        printf '%s' ''
    else
        local r="$ROOT"
        r="${r//\\/\\\\}"
        r="${r//|/\\|}"
        r="${r//&/\\&}"
        printf '%s' "s|\"/etc/kassabro/|\"$r/etc/kassabro/|g; s|\"/var/lib/kassabro|\"$r/var/lib/kassabro|g; s|\"/var/spool/kassabro|\"$r/var/spool/kassabro|g; s| /opt/kassabro/| $r/opt/kassabro/|g; s|=/opt/kassabro/|=$r/opt/kassabro/|g; s| /etc/kassabro/| $r/etc/kassabro/|g"
    fi
}

install_config() {
    ensure_dir "$ETC_DIR" 0750 "root:$SERVICE_USER"
    if [[ -e "$CONFIG" ]]; then
        say "keeping the existing $CONFIG"
    else
        local tmp
        tmp="$(mktemp "$CONFIG.XXXXXX")"
        sed -e "$(root_paths_sed)" "$SOURCE/deploy/raspberrypi/kassabro.toml" >"$tmp"
        chmod 0640 "$tmp"
        mv -f "$tmp" "$CONFIG"
        say "wrote $CONFIG from the example: set store_id and the destinations"
    fi
    ensure_file_mode "$CONFIG" 0640 "root:$SERVICE_USER"
    make_token "$ETC_DIR/ingest.token"
    make_token "$ETC_DIR/admin.token"
}

# make_token PATH: a random token, readable only by the service user; never replaced.
make_token() {
    local path="$1" tmp
    if [[ ! -e "$path" ]]; then
        tmp="$(mktemp "$path.XXXXXX")"
        chmod 0600 "$tmp"
        "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$tmp"
        mv -f "$tmp" "$path"
        say "created $path"
    fi
    ensure_file_mode "$path" 0600 "$SERVICE_USER:$SERVICE_USER"
}

install_dirs() {
    ensure_dir "$OPT_DIR" 0755 root:root
    ensure_dir "$RELEASES_DIR" 0755 root:root
    ensure_dir "$DATA_DIR" 0750 "$SERVICE_USER:$SERVICE_USER"
    ensure_dir "$SPOOL_DIR" 2770 "$SERVICE_USER:$SPOOL_GROUP"
    ensure_dir "$SPOOL_DIR/incoming" 2770 "$SERVICE_USER:$SPOOL_GROUP"
    ensure_dir "$SPOOL_DIR/done" 2750 "$SERVICE_USER:$SPOOL_GROUP"
    ensure_dir "$SPOOL_DIR/rejected" 2750 "$SERVICE_USER:$SPOOL_GROUP"
}

install_unit_and_docs() {
    ensure_dir "$UNIT_DIR" 0755 root:root
    local tmp
    tmp="$(mktemp)"
    sed -e "$(root_paths_sed)" "$SOURCE/systemd/kassabro.service" >"$tmp"
    if write_if_changed "$tmp" "$UNIT" 0644; then
        say "installed $UNIT"
        UNIT_CHANGED=1
    fi
    rm -f "$tmp"
    if [[ -f "$SOURCE/deploy/raspberrypi/README.md" ]]; then
        write_if_changed "$SOURCE/deploy/raspberrypi/README.md" "$OPT_DIR/README.md" 0644 || true
    fi
}

# The `kassabro` command for the technician: as root it runs as the service user,
# so a `sudo kassabro status` never leaves root-owned files in the outbox directory.
install_wrapper() {
    local bin_dir="$ROOT/usr/local/bin" tmp
    ensure_dir "$bin_dir" 0755 root:root
    tmp="$(mktemp)"
    cat >"$tmp" <<WRAPPER
#!/bin/sh
# Installed by Kassabro's install.sh: the kassabro CLI, run as the service user.
if [ "\$(id -u)" = 0 ]; then
    exec runuser -u $SERVICE_USER -- $OPT_DIR/venv/bin/kassabro "\$@"
fi
exec $OPT_DIR/venv/bin/kassabro "\$@"
WRAPPER
    write_if_changed "$tmp" "$bin_dir/kassabro" 0755 || true
    rm -f "$tmp"
}

# build_release: a new venv in releases/<id> from a clean copy of the source; prints its path.
build_release() {
    local release stage extras=""
    release="$(mktemp -d "$RELEASES_DIR/$(date -u +%Y%m%dT%H%M%SZ).XXXX")"
    chmod 0755 "$release"
    stage="$(mktemp -d)"
    # A clean copy: building in place would leave build/ and *.egg-info in the source tree.
    tar -C "$SOURCE" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
        --exclude=./demo-data --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
        -cf - . | tar -C "$stage" -xf -
    say "building a venv in $release" >&2
    "$PYTHON" -m venv "$release" >&2
    local -a pip_args=(--quiet --disable-pip-version-check)
    if [[ -n "${KASSABRO_PIP_ARGS:-}" ]]; then
        # shellcheck disable=SC2206  # word splitting of the extra arguments is the point
        pip_args+=(${KASSABRO_PIP_ARGS})
    fi
    ((USE_JOURNAL)) && extras="[journal]"
    if ! "$release/bin/pip" install "${pip_args[@]}" "$stage$extras" >&2; then
        if [[ -n "$extras" ]]; then
            warn "could not build with the journal extra (systemd-python); installing without it"
            "$release/bin/pip" install "${pip_args[@]}" "$stage" >&2 || {
                rm -rf "$stage" "$release"
                die "pip could not install Kassabro into $release"
            }
        else
            rm -rf "$stage" "$release"
            die "pip could not install Kassabro into $release"
        fi
    fi
    rm -rf "$stage"
    printf '%s\n' "$release"
}

# check_release RELEASE: the new program must accept the config before it is used.
check_release() {
    local release="$1"
    "$release/bin/kassabro" check-config --config "$CONFIG"
}

current_release() {
    if [[ -L "$VENV_LINK" ]]; then
        readlink -f "$VENV_LINK"
    fi
}

# point_venv_at RELEASE: swap the venv symlink atomically (rename over the old link).
point_venv_at() {
    local release="$1" rel
    rel="releases/$(basename "$release")"
    ln -sfn "$rel" "$VENV_LINK.new"
    mv -Tf "$VENV_LINK.new" "$VENV_LINK"
}

# Keep the current and the previous release; older ones go.
prune_releases() {
    local keep_current="$1" keep_previous="${2:-}" dir
    for dir in "$RELEASES_DIR"/*/; do
        dir="${dir%/}"
        [[ -d "$dir" ]] || continue
        [[ "$dir" == "$keep_current" || "$dir" == "$keep_previous" ]] && continue
        rm -rf "$dir"
    done
}

systemctl_do() {
    if ((USE_SYSTEMCTL)); then
        systemctl "$@"
    fi
}

status_address() {
    local listen port host
    listen="$("$VENV_LINK/bin/python" - "$CONFIG" <<'EOF' 2>/dev/null || true
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f).get("status", {}).get("listen", "0.0.0.0:8781"))
EOF
)"
    port="${listen##*:}"
    port="${port:-8781}"
    host="${listen%:*}"
    if [[ -z "$host" || "$host" == "0.0.0.0" || "$host" == "[::]" ]]; then
        host="$(hostname -I 2>/dev/null | awk '{print $1}')"
        host="${host:-$(hostname)}"
    fi
    printf 'http://%s:%s/\n' "$host" "$port"
}

# What install and upgrade both lay down: packages, accounts, folders, the config
# (only if absent), the unit and the CLI wrapper. Sets UNIT_CHANGED.
prepare_system() {
    check_platform
    install_apt_packages
    check_python
    ensure_accounts
    install_dirs
    install_config
    UNIT_CHANGED=0
    install_unit_and_docs
    install_wrapper
}

do_install() {
    require_root
    prepare_system

    local current release
    current="$(current_release)"
    if [[ -n "$current" && -x "$current/bin/python" ]] && "$current/bin/python" -c 'import agent' 2>/dev/null; then
        say "program already installed in $current (use 'upgrade' to replace it)"
    else
        release="$(build_release)"
        point_venv_at "$release"
        prune_releases "$release"
        say "installed the program in $release"
    fi

    local config_ok=1
    if ! "$VENV_LINK/bin/kassabro" check-config --config "$CONFIG"; then
        config_ok=0
        warn "$CONFIG has problems (above); fix them, then: systemctl restart kassabro"
    fi
    if ((USE_SYSTEMCTL)); then
        if ((UNIT_CHANGED)); then systemctl daemon-reload; fi
        systemctl enable --quiet kassabro.service
        if ((config_ok)) && ! systemctl is-active --quiet kassabro.service; then
            systemctl start kassabro.service
        fi
    fi
    say "status page: $(status_address)"
    say "logs: journalctl -u kassabro -f"
}

do_upgrade() {
    require_root
    if [[ -z "$(current_release)" ]]; then
        say "nothing installed yet: installing"
        do_install
        return
    fi
    prepare_system

    local previous release
    previous="$(current_release)"
    release="$(build_release)"
    if ! check_release "$release"; then
        rm -rf "$release"
        die "the new version does not accept $CONFIG; kept the running version ${previous:-<none>}"
    fi
    point_venv_at "$release"
    say "switched to $release (previous: ${previous:-<none>})"
    if ((USE_SYSTEMCTL)); then
        if ((UNIT_CHANGED)); then systemctl daemon-reload; fi
        # Type=notify: restart returns once the new agent is READY (migrations done) or failed.
        if ! systemctl restart kassabro.service; then
            if [[ -n "$previous" ]]; then
                warn "the new version did not start; rolling back to $previous"
                point_venv_at "$previous"
                systemctl restart kassabro.service || true
            fi
            rm -rf "$release"
            die "upgrade failed; see: journalctl -u kassabro -n 100"
        fi
    fi
    prune_releases "$release" "$previous"
    say "upgrade done; status page: $(status_address)"
}

do_uninstall() {
    require_root
    if ((USE_SYSTEMCTL)); then
        systemctl disable --now kassabro.service 2>/dev/null || true
    fi
    if [[ -e "$UNIT" ]]; then
        rm -f "$UNIT"
        systemctl_do daemon-reload
    fi
    rm -rf "$OPT_DIR"
    rm -f "$ROOT/usr/local/bin/kassabro"
    say "removed the program"
    if ((PURGE)); then
        rm -rf "$ETC_DIR" "$DATA_DIR" "$SPOOL_DIR"
        if real_system; then
            getent passwd "$SERVICE_USER" >/dev/null && userdel "$SERVICE_USER"
            getent group "$SPOOL_GROUP" >/dev/null && groupdel "$SPOOL_GROUP"
        fi
        say "purged config, data and spool"
    else
        say "kept $ETC_DIR and $DATA_DIR (uninstall --purge removes them)"
    fi
}

main() {
    parse_args "$@"
    case "$ACTION" in
        install) do_install ;;
        upgrade) do_upgrade ;;
        uninstall) do_uninstall ;;
    esac
}

main "$@"
