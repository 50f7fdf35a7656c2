#!/usr/bin/env bash
# Kassabro installer, run from an extracted release bundle (kassabro-<version>-py<XY>-<platform>.tar.gz).
# It needs no network and no compiler: every wheel is in the bundle, checked against SHA256SUMS
# and installed with --require-hashes. One bundle per Python and platform: py313 for Raspberry Pi
# OS 13 trixie (Python 3.13), py311 for Raspberry Pi OS 12 bookworm (Python 3.11); linux_aarch64
# (64-bit), linux_armv7l (32-bit), linux_x86_64. It refuses a bundle for another Python or platform
# and names the one to take.
#
#   sudo ./install.sh [install]          first install; run again, it changes nothing
#   sudo ./install.sh upgrade            this bundle's release beside the running one, a copy of the
#                                        outbox, switch, health check; rollback of both if it fails
#   sudo ./install.sh uninstall          removes the program; keeps config and data
#   sudo ./install.sh uninstall --purge  ... and the config, data, spool and user
#   sudo ./install.sh --journal-limits   only the journald limits for an SD card (64 MB, one month)
#   sudo ./install.sh --share            share the spool's incoming/ over SMB for a Windows till
#                                        (Samba; user kassabro-till, SMB3, signing required, no guest)
#
# Options:
#   --journal-limits     with install or upgrade: also install the journald limits
#   --share              with install or upgrade: also set up the Windows share (see above)
#   --till ID            with install or upgrade, repeatable: a token of its own for till ID in
#                        /etc/kassabro/tills/ID.token (kept on a re-run); its [[ingest.tills]]
#                        table is added to the installer's own example config, else printed to add
#   --health-timeout S   seconds an upgraded release has to pass its health check (default 60)
#   --root DIR           install under DIR instead of / (tests, staging): no useradd/chown, no
#                        systemctl; paths in the written config and unit point inside DIR
#   --no-systemctl       do not call systemctl
#   --service-ctl CMD    run "CMD ACTION" (start, stop, enable) instead of systemctl for the service
#   --purge              with uninstall: also remove config, data, spool and the user
#   -h, --help           this text
#
# Environment: KASSABRO_PYTHON (default python3); KASSABRO_PIP_ARGS, extra arguments for the
# bundle's pip (e.g. --no-compile on a staging machine that never runs the service).
#
# Layout:
#   /opt/kassabro/releases/<version>-<time>/  one venv per install or upgrade (current and previous kept)
#   /opt/kassabro/venv             symlink to the current release (the unit runs venv/bin/kassabro)
#   /etc/kassabro/                 kassabro.toml (root:kassabro 0640), *.token (kassabro 0600)
#   /etc/kassabro/tills/           <till id>.token (kassabro 0600): install.sh --till, kassabro init
#   /etc/kassabro/tls/             cert.pem (0644), key.pem (kassabro 0600): kassabro tls renew
#   /var/lib/kassabro/             the outbox (kassabro:kassabro 0750), and the copy an upgrade keeps
#   /var/spool/kassabro/           spool for the till integration (kassabro:kassabro-spool 2770)
#   /usr/local/bin/kassabro        the CLI; run as root it switches to the kassabro user
set -Eeuo pipefail
# A root shell with umask 077 would make the venv unreadable for the service user.
umask 022

readonly SERVICE_USER=kassabro
readonly SPOOL_GROUP=kassabro-spool
readonly PLACEHOLDER_STORE_ID=store-001
BUNDLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly BUNDLE_DIR

ACTION=""
ROOT=""
PURGE=0
USE_SYSTEMCTL=1
SERVICE_CTL=""
JOURNAL_LIMITS=0
SHARE=0
HEALTH_TIMEOUT=60
TILLS=()
PYTHON="${KASSABRO_PYTHON:-python3}"

say() { printf '%s\n' "kassabro-install: $*"; }
warn() { printf '%s\n' "kassabro-install: WARNING: $*" >&2; }
die() {
    printf '%s\n' "kassabro-install: ERROR: $*" >&2
    exit 1
}
usage() {
    # The comment block at the top of this file, without its "# ".
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}
usage_error() {
    printf '%s\n' "kassabro-install: $*" >&2
    usage >&2
    exit 2
}

# ---------------------------------------------------------------------------- arguments

parse_args() {
    while (($#)); do
        case "$1" in
            install | upgrade | uninstall) ACTION="$1" ;;
            --purge) PURGE=1 ;;
            --journal-limits) JOURNAL_LIMITS=1 ;;
            --share) SHARE=1 ;;
            --till)
                [[ $# -ge 2 && "$2" =~ ^[A-Za-z0-9._-]{1,64}$ ]] ||
                    usage_error "--till needs a till id: 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
                TILLS+=("$2")
                shift
                ;;
            --root)
                [[ $# -ge 2 ]] || usage_error "--root needs a directory"
                ROOT="$2"
                shift
                ;;
            --root=*) ROOT="${1#--root=}" ;;
            --service-ctl)
                [[ $# -ge 2 ]] || usage_error "--service-ctl needs a command"
                SERVICE_CTL="$2"
                shift
                ;;
            --health-timeout)
                [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || usage_error "--health-timeout needs a number of seconds"
                HEALTH_TIMEOUT="$2"
                shift
                ;;
            --no-systemctl) USE_SYSTEMCTL=0 ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) usage_error "unknown argument: $1" ;;
        esac
        shift
    done
    if [[ -z "$ACTION" ]]; then
        if ((JOURNAL_LIMITS)); then
            ACTION=journal-limits
        elif ((SHARE)); then
            ACTION=share
        else
            ACTION=install
        fi
    fi
    if [[ -n "$ROOT" ]]; then
        mkdir -p "$ROOT"
        ROOT="$(cd "$ROOT" && pwd)"
        USE_SYSTEMCTL=0
    fi
    readonly ACTION ROOT PURGE USE_SYSTEMCTL SERVICE_CTL JOURNAL_LIMITS SHARE HEALTH_TIMEOUT TILLS

    OPT_DIR="$ROOT/opt/kassabro"
    RELEASES_DIR="$OPT_DIR/releases"
    VENV_LINK="$OPT_DIR/venv"
    ETC_DIR="$ROOT/etc/kassabro"
    CONFIG="$ETC_DIR/kassabro.toml"
    DATA_DIR="$ROOT/var/lib/kassabro"
    OUTBOX="$DATA_DIR/outbox.db"
    SPOOL_DIR="$ROOT/var/spool/kassabro"
    UNIT_DIR="$ROOT/etc/systemd/system"
    UNIT="$UNIT_DIR/kassabro.service"
    JOURNALD_DROPIN="$ROOT/etc/systemd/journald.conf.d/kassabro.conf"
    SAMBA_DIR="$ROOT/etc/samba"
    readonly SAMBA_DIR
    readonly OPT_DIR RELEASES_DIR VENV_LINK ETC_DIR CONFIG DATA_DIR OUTBOX SPOOL_DIR UNIT_DIR UNIT JOURNALD_DROPIN
}

# True when running against the real system (not --root): only then do we
# create users, chown files and run commands as the service user.
real_system() { [[ -z "$ROOT" ]]; }

require_root() {
    if real_system && [[ "$(id -u)" != 0 ]]; then
        die "run as root: sudo $0 $ACTION"
    fi
}

# as_service_user CMD...: outbox files must stay the service user's, never root's.
as_service_user() {
    if real_system; then
        runuser -u "$SERVICE_USER" -- "$@"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------------------- the bundle

# check_bundle: every file as built (SHA256SUMS), and meant for this machine's Python. Sets BUNDLE_*.
check_bundle() {
    local key value
    [[ -f "$BUNDLE_DIR/BUNDLE" && -f "$BUNDLE_DIR/SHA256SUMS" && -d "$BUNDLE_DIR/wheels" ]] ||
        die "$BUNDLE_DIR is not an extracted Kassabro bundle (no BUNDLE, SHA256SUMS, wheels/); make dist builds one"
    (cd "$BUNDLE_DIR" && sha256sum --check --quiet --strict SHA256SUMS) ||
        die "the bundle's files do not match SHA256SUMS: copy the .tar.gz again"
    BUNDLE_VERSION="" BUNDLE_PLATFORM="" BUNDLE_PYTHON="" BUNDLE_MISSING=""
    while IFS='=' read -r key value; do
        case "$key" in
            version) BUNDLE_VERSION="$value" ;;
            platform) BUNDLE_PLATFORM="$value" ;;
            python) BUNDLE_PYTHON="$value" ;;
            missing) BUNDLE_MISSING="$value" ;;
        esac
    done <"$BUNDLE_DIR/BUNDLE"
    [[ -n "$BUNDLE_VERSION" && -n "$BUNDLE_PLATFORM" && -n "$BUNDLE_PYTHON" ]] || die "$BUNDLE_DIR/BUNDLE is incomplete"
    readonly BUNDLE_VERSION BUNDLE_PLATFORM BUNDLE_PYTHON BUNDLE_MISSING
}

# raspberry_pi_os X.Y: the Raspberry Pi OS release whose python3 is X.Y (deploy/dist.py's TARGETS), or nothing.
raspberry_pi_os() {
    case "$1" in
        3.11) echo "Raspberry Pi OS 12 bookworm" ;;
        3.13) echo "Raspberry Pi OS 13 trixie" ;;
    esac
}

# wrong_bundle SWEDISH ENGLISH: the technician's message, Swedish first, then stop.
wrong_bundle() {
    printf '%s\n' "kassabro-install: FEL: $1" >&2
    die "$2"
}

# check_python: the bundle's wheels are built for one Python version and one processor. When this
# machine needs another bundle, the message names it (kassabro-<version>-py<XY>-<platform>.tar.gz).
check_python() {
    local found machine right system
    command -v "$PYTHON" >/dev/null ||
        wrong_bundle "$PYTHON finns inte (Raspberry Pi OS har python3)" "$PYTHON not found (Raspberry Pi OS ships python3)"
    found="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    # A 32-bit system on a 64-bit kernel says aarch64 in uname: ask the Python's own pointer size.
    machine="$("$PYTHON" -c '
import platform, struct
m = platform.machine().lower()
m = {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)
if struct.calcsize("P") == 4 and m in ("aarch64", "armv8l", "armv7l"):
    m = "armv7l"
print("linux_" + m)')"
    if [[ "$found" != "$BUNDLE_PYTHON" || "$machine" != "$BUNDLE_PLATFORM" ]]; then
        system="$(raspberry_pi_os "$found")"
        [[ -n "$system" ]] ||
            wrong_bundle "den här datorns $PYTHON är Python $found; Kassabro finns för Python 3.13 (Raspberry Pi OS 13 trixie) och 3.11 (Raspberry Pi OS 12 bookworm), inte för $found. Installera Raspberry Pi OS 13." \
                "this machine's $PYTHON is Python $found; Kassabro has bundles for Python 3.13 (Raspberry Pi OS 13 trixie) and 3.11 (Raspberry Pi OS 12 bookworm), not $found. Install Raspberry Pi OS 13."
        right="kassabro-$BUNDLE_VERSION-py${found/./}-$machine.tar.gz"
        if [[ "$found" != "$BUNDLE_PYTHON" ]]; then
            wrong_bundle "fel paket: det här är för Python $BUNDLE_PYTHON ($(raspberry_pi_os "$BUNDLE_PYTHON")), men den här datorns $PYTHON är $found (som på $system). Ta $right i stället." \
                "wrong bundle: this bundle is for Python $BUNDLE_PYTHON; this machine's $PYTHON is $found (as on $system): use $right instead"
        fi
        wrong_bundle "fel paket: det här är för $BUNDLE_PLATFORM, men den här datorn är $machine. Ta $right i stället." \
            "wrong bundle: this bundle is for $BUNDLE_PLATFORM; this machine is $machine: use $right instead"
    fi
    if [[ -n "$BUNDLE_MISSING" ]]; then
        say "this platform's bundle has no wheel for: $BUNDLE_MISSING (see $BUNDLE_DIR/BUNDLE for what changes)"
    fi
}

# ---------------------------------------------------------------------------- the system

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

# write_if_changed SRC DEST MODE: copy only when the content differs; returns whether it did.
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

install_dirs() {
    ensure_dir "$OPT_DIR" 0755 root:root
    ensure_dir "$RELEASES_DIR" 0755 root:root
    ensure_dir "$DATA_DIR" 0750 "$SERVICE_USER:$SERVICE_USER"
    ensure_dir "$SPOOL_DIR" 2770 "$SERVICE_USER:$SPOOL_GROUP"
    ensure_dir "$SPOOL_DIR/incoming" 2770 "$SERVICE_USER:$SPOOL_GROUP"
    ensure_dir "$SPOOL_DIR/done" 2750 "$SERVICE_USER:$SPOOL_GROUP"
    ensure_dir "$SPOOL_DIR/rejected" 2750 "$SERVICE_USER:$SPOOL_GROUP"
}

install_config() {
    ensure_dir "$ETC_DIR" 0750 "root:$SERVICE_USER"
    if [[ -e "$CONFIG" ]]; then
        say "keeping the existing $CONFIG"
    else
        local tmp
        tmp="$(mktemp "$CONFIG.XXXXXX")"
        sed -e "$(root_paths_sed)" "$BUNDLE_DIR/examples/kassabro.toml" >"$tmp"
        chmod 0640 "$tmp"
        mv -f "$tmp" "$CONFIG"
        say "wrote $CONFIG from the example"
    fi
    ensure_file_mode "$CONFIG" 0640 "root:$SERVICE_USER"
    make_token "$ETC_DIR/ingest.token"
    make_token "$ETC_DIR/admin.token"
}

# make_secret PATH BYTES OWNER [WHAT]: a random secret (BYTES of randomness, URL-safe), mode 0600
# for OWNER, written whole under a temporary name first; an existing one is never replaced.
make_secret() {
    local path="$1" bytes="$2" owner="$3" what="${4:-}" tmp
    if [[ ! -e "$path" ]]; then
        tmp="$(mktemp "$path.XXXXXX")"
        chmod 0600 "$tmp"
        "$PYTHON" -c "import secrets; print(secrets.token_urlsafe($bytes))" >"$tmp"
        mv -f "$tmp" "$path"
        say "created $path${what:+ ($what)}"
    fi
    ensure_file_mode "$path" 0600 "$owner"
}

# make_token PATH: a random token, readable only by the service user; never replaced.
make_token() {
    make_secret "$1" 32 "$SERVICE_USER:$SERVICE_USER"
}

# install_till_tokens: one token per till named with --till, so a till may send only its own
# till_id (contract §2). Tokens are made once and kept, like the shared ones. The installer edits
# only its own example config (still the placeholder store_id); a shop's config is the shop's,
# so there it prints the tables to add.
install_till_tokens() {
    ((${#TILLS[@]})) || return 0
    local tills_dir="$ETC_DIR/tills" till missing store_id tables="" tmp
    ensure_dir "$tills_dir" 0750 "root:$SERVICE_USER"
    for till in "${TILLS[@]}"; do
        make_token "$tills_dir/$till.token"
    done
    # The named tills the config has no [[ingest.tills]] table for yet.
    missing="$("$PYTHON" - "$CONFIG" "${TILLS[@]}" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    known = {t.get("id") for t in tomllib.load(f).get("ingest", {}).get("tills", [])}
print(" ".join(dict.fromkeys(t for t in sys.argv[2:] if t not in known)))
EOF
)" || die "$CONFIG is not valid TOML; the till tokens are made, add their [[ingest.tills]] tables by hand"
    [[ -n "$missing" ]] || return 0
    for till in $missing; do
        tables+="$(printf '\n[[ingest.tills]]\nid = "%s"\ntoken_file = "%s"' "$till" "$tills_dir/$till.token")"$'\n'
    done
    store_id="$(config_store_id)"
    if [[ "$store_id" == "$PLACEHOLDER_STORE_ID" ]]; then
        tmp="$(mktemp "$CONFIG.XXXXXX")"
        cat "$CONFIG" >"$tmp"
        printf '%s' "$tables" >>"$tmp"
        chmod 0640 "$tmp"
        mv -f "$tmp" "$CONFIG"
        ensure_file_mode "$CONFIG" 0640 "root:$SERVICE_USER"
        say "added [[ingest.tills]] for $missing to $CONFIG"
    else
        say "add to $CONFIG (after [ingest]) so these tills use their own tokens, then: kassabro check-config"
        printf '%s' "$tables"
    fi
}

# install_cert VENV: the listeners' self-signed certificate, made once by `kassabro tls renew`
# (10 years; the Pi's name, name.local and addresses). Renewing is the technician's call.
install_cert() {
    local venv="$1" tls_dir="$ETC_DIR/tls"
    ensure_dir "$tls_dir" 0750 "root:$SERVICE_USER"
    if [[ ! -e "$tls_dir/cert.pem" ]]; then
        "$venv/bin/kassabro" tls renew --cert "$tls_dir/cert.pem" --key "$tls_dir/key.pem" \
            || die "could not make the TLS certificate in $tls_dir"
    fi
    ensure_file_mode "$tls_dir/key.pem" 0600 "$SERVICE_USER:$SERVICE_USER"
    ensure_file_mode "$tls_dir/cert.pem" 0644 "root:$SERVICE_USER"
}

# install_avahi: announce the ingest API as _kassabro._tcp (port, and the certificate's SHA-256
# fingerprint in TXT) when Avahi is present, as on Raspberry Pi OS, so a till finds
# https://<hostname>.local:8780 without a DHCP reservation. Rewritten when the port or certificate changes.
install_avahi() {
    local services="$ROOT/etc/avahi/services" port fingerprint tmp
    [[ -d "$ROOT/etc/avahi" ]] || return 0
    port="$("$PYTHON" - "$CONFIG" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f).get("ingest", {}).get("listen", "127.0.0.1:8780").rpartition(":")[2])
EOF
)"
    fingerprint="$(openssl x509 -in "$ETC_DIR/tls/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2)"
    ensure_dir "$services" 0755 root:root
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<!-- Kassabro's ingest API, written by install.sh: https://<hostname>.local:$port -->
<service-group>
  <name replace-wildcards="yes">Kassabro %h</name>
  <service>
    <type>_kassabro._tcp</type>
    <port>$port</port>
    <txt-record>path=/v1/</txt-record>
    <txt-record>tls=1</txt-record>
    <txt-record>sha256=$fingerprint</txt-record>
  </service>
</service-group>
EOF
    if write_if_changed "$tmp" "$services/kassabro.service" 0644; then
        say "announced _kassabro._tcp on port $port (Avahi: $services/kassabro.service)"
    fi
    rm -f "$tmp"
}

install_unit_and_docs() {
    ensure_dir "$UNIT_DIR" 0755 root:root
    local tmp
    tmp="$(mktemp)"
    sed -e "$(root_paths_sed)" "$BUNDLE_DIR/kassabro.service" >"$tmp"
    if write_if_changed "$tmp" "$UNIT" 0644; then
        say "installed $UNIT"
        UNIT_CHANGED=1
    fi
    rm -f "$tmp"
    write_if_changed "$BUNDLE_DIR/README.md" "$OPT_DIR/README.md" 0644 || true
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

# The journal lives on the SD card too: cap it (the drop-in says why).
install_journal_limits() {
    ensure_dir "$(dirname "$JOURNALD_DROPIN")" 0755 root:root
    if write_if_changed "$BUNDLE_DIR/journald-kassabro.conf" "$JOURNALD_DROPIN" 0644; then
        say "installed $JOURNALD_DROPIN: the journal keeps at most 64 MB and one month"
        if real_system && ((USE_SYSTEMCTL)); then systemctl restart systemd-journald; fi
    else
        say "$JOURNALD_DROPIN is in place"
    fi
}

readonly SHARE_USER=kassabro-till

# install_share: Samba shares the spool's incoming/ as "kassabro" (read-write) and rejected/ as
# "kassabro-rejected" (read-only) for one SMB user, kassabro-till, whose password is kept in
# /etc/kassabro/smb-till.password (root 0600). SMB3 only, signing required, no guest.
install_share() {
    if real_system && ! command -v smbd >/dev/null; then
        say "installing Samba"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends samba ||
            die "could not install samba (apt-get install samba); the share is not set up"
    fi
    if real_system && ! getent passwd "$SHARE_USER" >/dev/null; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            --gid "$SPOOL_GROUP" --comment "Kassabro: the Windows till's share" "$SHARE_USER"
        say "created user $SHARE_USER (SMB only, no login)"
    fi
    local password_file="$ETC_DIR/smb-till.password" tmp
    make_secret "$password_file" 18 root:root "the till's share password"
    ensure_dir "$SAMBA_DIR" 0755 root:root
    tmp="$(mktemp)"
    sed -e "s|@SPOOL@|$SPOOL_DIR|g; s|@USER@|$SHARE_USER|g; s|@GROUP@|$SPOOL_GROUP|g" \
        "$BUNDLE_DIR/samba-kassabro.conf" >"$tmp"
    if write_if_changed "$tmp" "$SAMBA_DIR/kassabro.conf" 0644; then say "installed $SAMBA_DIR/kassabro.conf"; fi
    rm -f "$tmp"
    local include="include = $SAMBA_DIR/kassabro.conf"
    touch "$SAMBA_DIR/smb.conf"
    if ! grep -qxF "   $include" "$SAMBA_DIR/smb.conf"; then
        printf '\n[global]\n   %s\n' "$include" >>"$SAMBA_DIR/smb.conf"
        say "$SAMBA_DIR/smb.conf includes $SAMBA_DIR/kassabro.conf"
    fi
    if real_system; then
        local password
        password="$(cat "$password_file")"
        printf '%s\n%s\n' "$password" "$password" | smbpasswd -a -s "$SHARE_USER" >/dev/null
        smbpasswd -e "$SHARE_USER" >/dev/null
        testparm -s >/dev/null 2>&1 || die "testparm refuses $SAMBA_DIR/smb.conf"
        if ((USE_SYSTEMCTL)); then systemctl enable --quiet smbd && systemctl restart smbd; fi
    fi
    say "share: \\\\$(hostname).local\\kassabro as $SHARE_USER (password in $password_file)"
}

# What install and upgrade both lay down: accounts, folders, the config (only if
# absent), the unit, the CLI wrapper, the journal limits if asked. Sets UNIT_CHANGED.
prepare_system() {
    check_bundle
    check_python
    ensure_accounts
    install_dirs
    install_config
    install_till_tokens
    UNIT_CHANGED=0
    install_unit_and_docs
    install_wrapper
    if ((JOURNAL_LIMITS)); then install_journal_limits; fi
    if ((SHARE)); then install_share; fi
}

# ---------------------------------------------------------------------------- releases

# build_release: a new venv in releases/<version>-<time>, from the bundle's wheels only; prints its path.
build_release() {
    local release pip_wheel
    release="$(mktemp -d "$RELEASES_DIR/$BUNDLE_VERSION-$(date -u +%Y%m%dT%H%M%SZ).XXXX")"
    chmod 0755 "$release"
    say "installing Kassabro $BUNDLE_VERSION into $release" >&2
    # No ensurepip (Debian's python3-venv) needed: the bundle's own pip installs from its wheel.
    "$PYTHON" -m venv --without-pip "$release" >&2
    pip_wheel="$(find "$BUNDLE_DIR/wheels" -maxdepth 1 -name 'pip-*.whl' | head -n 1)"
    [[ -n "$pip_wheel" ]] || die "the bundle has no pip wheel"
    local -a pip_args=(--isolated --quiet --disable-pip-version-check --no-index --find-links "$BUNDLE_DIR/wheels"
        --only-binary=:all: --no-deps --require-hashes --requirement "$BUNDLE_DIR/requirements.txt")
    if [[ -n "${KASSABRO_PIP_ARGS:-}" ]]; then
        # shellcheck disable=SC2206  # word splitting of the extra arguments is the point
        pip_args+=(${KASSABRO_PIP_ARGS})
    fi
    # --no-deps: requirements.txt is the complete locked set (minus what this platform has no wheel for).
    if ! "$release/bin/python" "$pip_wheel/pip" install "${pip_args[@]}" >&2; then
        rm -rf "$release"
        die "pip could not install the bundle's wheels into $release"
    fi
    printf '%s\n' "$release"
}

current_release() {
    if [[ -L "$VENV_LINK" ]]; then
        readlink -f "$VENV_LINK"
    fi
}

release_version() {
    "$1/bin/kassabro" --version 2>/dev/null | awk '{print $2}'
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

# ---------------------------------------------------------------------------- the config gate

config_store_id() {
    "$PYTHON" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f).get("store_id", ""))' "$CONFIG"
}

# config_ready RELEASE: the shop's own config, accepted by RELEASE's check-config.
config_ready() {
    local release="$1" store_id
    if ! store_id="$(config_store_id 2>/dev/null)"; then
        warn "$CONFIG is not valid TOML"
        return 1
    fi
    if [[ "$store_id" == "$PLACEHOLDER_STORE_ID" ]]; then
        warn "$CONFIG still has the example's store_id \"$PLACEHOLDER_STORE_ID\": this shop is not set up yet"
        return 1
    fi
    "$release/bin/kassabro" check-config --config "$CONFIG"
}

next_step() {
    say "the service is NOT enabled. Next step: run kassabro init or copy a config to $CONFIG, then run this installer again"
}

# ---------------------------------------------------------------------------- the service

have_service_manager() { [[ -n "$SERVICE_CTL" ]] || ((USE_SYSTEMCTL)); }

# service ACTION: start, stop, enable (through systemctl, or --service-ctl).
service() {
    if [[ -n "$SERVICE_CTL" ]]; then
        "$SERVICE_CTL" "$1"
    elif ((USE_SYSTEMCTL)); then
        if [[ "$1" == enable ]]; then systemctl enable --quiet kassabro.service; else systemctl "$1" kassabro.service; fi
    fi
}

daemon_reload_if_needed() {
    if ((USE_SYSTEMCTL && UNIT_CHANGED)); then systemctl daemon-reload; fi
}

# The status listener on this machine (config [status] listen), as a URL a local client reaches.
status_url() {
    "$PYTHON" - "$CONFIG" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    listen = tomllib.load(f).get("status", {}).get("listen", "0.0.0.0:8781")
host, _, port = listen.rpartition(":")
host = host.strip("[]")
if host in ("", "0.0.0.0", "::"):
    host = "127.0.0.1"
print(f"http://{'[' + host + ']' if ':' in host else host}:{port}")
EOF
}

# wait_healthy VERSION SECONDS: /healthz answers 200 from a process reporting VERSION, within SECONDS.
wait_healthy() {
    local version="$1" seconds="$2"
    "$PYTHON" - "$(status_url)" "$version" "$seconds" <<'EOF'
import json, sys, time, urllib.request
base, version, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + seconds
last = "no answer"
while True:
    try:
        with urllib.request.urlopen(base + "/api/status", timeout=3) as r:
            running = json.load(r).get("version")
        if running != version:
            last = f"version {running} answers, not {version}"
        else:
            with urllib.request.urlopen(base + "/healthz", timeout=3) as r:
                sys.exit(0)
    except urllib.error.HTTPError as exc:
        last = f"{exc.url}: {exc.code} {exc.read()[:200].decode('utf-8', 'replace')}"
    except (OSError, ValueError) as exc:
        last = f"no answer ({exc})"
    if time.monotonic() >= deadline:
        print(f"not healthy within {seconds:.0f} s: {last}", file=sys.stderr)
        sys.exit(1)
    time.sleep(1)
EOF
}

status_address() {
    local listen port host
    listen="$("$PYTHON" - "$CONFIG" <<'EOF' 2>/dev/null || true
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

# ---------------------------------------------------------------------------- the outbox around an upgrade

# backup_outbox VERSION: a consistent copy of the outbox (SQLite's backup API; the agent may be
# running) beside it, before the new release opens it. Sets BACKUP ("" when there is no outbox yet).
backup_outbox() {
    local version="$1" need free
    BACKUP=""
    [[ -f "$OUTBOX" ]] || return 0
    need="$(stat -c %s "$OUTBOX")"
    if [[ -f "$OUTBOX-wal" ]]; then need=$((need + $(stat -c %s "$OUTBOX-wal"))); fi
    free="$(df --output=avail -B1 "$DATA_DIR" | tail -n 1 | tr -d ' ')"
    if ((free < need + 16 * 1024 * 1024)); then
        die "not enough space in $DATA_DIR for the outbox copy an upgrade keeps ($need bytes); nothing changed"
    fi
    BACKUP="$OUTBOX.before-$version-$(date -u +%Y%m%dT%H%M%SZ)"
    as_service_user "$PYTHON" - "$OUTBOX" "$BACKUP" <<'EOF' || die "could not copy the outbox to $BACKUP; nothing changed"
import os, sqlite3, sys
source, target = sys.argv[1], sys.argv[2]
src = sqlite3.connect(source, timeout=30)
dst = sqlite3.connect(target + ".tmp")
src.backup(dst)  # one step, under one read transaction: a consistent snapshot
dst.close()
src.close()
fd = os.open(target + ".tmp", os.O_RDONLY)
os.fsync(fd)
os.close(fd)
os.replace(target + ".tmp", target)
EOF
    say "kept a copy of the outbox: $BACKUP"
}

# set_aside_outbox VERSION: move the newer release's outbox files out of the way; prints the new name.
set_aside_outbox() {
    local aside suffix
    aside="$OUTBOX.rolled-back-$1-$(date -u +%Y%m%dT%H%M%SZ)"
    for suffix in "" -wal -shm; do
        if [[ -e "$OUTBOX$suffix" ]]; then mv -f "$OUTBOX$suffix" "$aside$suffix"; fi
    done
    rm -f "$OUTBOX.clean"
    printf '%s\n' "$aside"
}

# restore_backup: the copy taken before the upgrade becomes the outbox again (the copy itself stays).
restore_backup() {
    [[ -n "$BACKUP" ]] || return 0
    if ! as_service_user cp "$BACKUP" "$OUTBOX.restoring"; then
        rm -f "$OUTBOX.restoring"
        return 1
    fi
    mv -f "$OUTBOX.restoring" "$OUTBOX"
}

# carry_back RELEASE FILE: RELEASE (the old one) takes over the records only FILE holds.
carry_back() {
    local release="$1" file="$2"
    [[ -f "$file" ]] || return 0
    if as_service_user "$release/bin/kassabro" import-outbox --config "$CONFIG" "$file"; then
        return 0
    fi
    warn "not every record of $file could be carried back; they are kept there (docs/deployment.md, Rollback)"
    return 1
}

# Older copies go once an upgrade succeeded; the newest copy and set-aside files stay.
prune_backups() {
    local keep="$1" file
    for file in "$OUTBOX".before-*; do
        [[ -e "$file" && "$file" != "$keep" ]] || continue
        rm -f "$file"
    done
}

# rollback PREVIOUS FAILED_RELEASE NEW_VERSION REASON: the old program and the outbox copy back,
# plus every record the new release accepted meanwhile. Exits 1.
rollback() {
    local previous="$1" failed="$2" version="$3" reason="$4" aside carried=1
    warn "$reason: rolling back to $(basename "$previous")"
    service stop || true
    aside="$(set_aside_outbox "$version")"
    # Without the copy the old release starts a fresh outbox and the carry-back below still brings
    # every record (the newer file holds all of them); only delivery progress would be redone.
    restore_backup || warn "could not put the outbox copy $BACKUP back; carrying every record over instead"
    point_venv_at "$previous"
    carry_back "$previous" "$aside" || carried=0
    daemon_reload_if_needed
    if service start && wait_healthy "$(release_version "$previous")" "$HEALTH_TIMEOUT"; then
        say "the previous release runs again"
    else
        warn "the previous release did not pass its health check either: journalctl -u kassabro -n 100"
    fi
    rm -rf "$failed"
    say "the newer release's outbox is kept as $aside"
    if ((carried)); then
        die "upgrade to $version rolled back; every record it accepted was carried back"
    fi
    die "upgrade to $version rolled back; some records it accepted are only in $aside"
}

# ---------------------------------------------------------------------------- actions

do_install() {
    require_root
    prepare_system

    local current release
    current="$(current_release)"
    if [[ -n "$current" && -x "$current/bin/kassabro" ]] && "$current/bin/kassabro" --version >/dev/null 2>&1; then
        say "Kassabro $(release_version "$current") is already installed in $current (use 'upgrade' to replace it)"
    else
        release="$(build_release)"
        point_venv_at "$release"
        prune_releases "$release"
        say "installed Kassabro $BUNDLE_VERSION in $release"
    fi
    install_cert "$VENV_LINK"
    install_avahi

    if ! config_ready "$VENV_LINK"; then
        next_step
        return 0
    fi
    daemon_reload_if_needed
    if have_service_manager; then
        service enable
        service start
        say "the service is enabled and started"
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
    install_cert "$release"
    install_avahi
    if ! "$release/bin/kassabro" check-config --config "$CONFIG"; then
        rm -rf "$release"
        die "Kassabro $BUNDLE_VERSION does not accept $CONFIG; kept the running version $(basename "$previous")"
    fi
    if ! config_ready "$release" >/dev/null 2>&1; then
        point_venv_at "$release"
        prune_releases "$release" "$previous"
        say "installed Kassabro $BUNDLE_VERSION in $release"
        next_step
        return 0
    fi

    backup_outbox "$BUNDLE_VERSION"
    if ! have_service_manager; then
        point_venv_at "$release"
        prune_releases "$release" "$previous"
        say "switched to $release (previous: $previous); no service manager, so no health check"
        return 0
    fi
    service stop
    point_venv_at "$release"
    daemon_reload_if_needed
    say "switched to $release (previous: $previous); health check for up to $HEALTH_TIMEOUT s"
    if ! service start; then
        rollback "$previous" "$release" "$BUNDLE_VERSION" "Kassabro $BUNDLE_VERSION did not start"
    fi
    if ! wait_healthy "$BUNDLE_VERSION" "$HEALTH_TIMEOUT"; then
        rollback "$previous" "$release" "$BUNDLE_VERSION" "Kassabro $BUNDLE_VERSION failed its health check"
    fi
    prune_releases "$release" "$previous"
    prune_backups "$BACKUP"
    say "upgrade to $BUNDLE_VERSION done; status page: $(status_address)"
}

do_uninstall() {
    require_root
    if ((USE_SYSTEMCTL)); then
        systemctl disable --now kassabro.service 2>/dev/null || true
    elif [[ -n "$SERVICE_CTL" ]]; then
        service stop || true
    fi
    if [[ -e "$UNIT" ]]; then
        rm -f "$UNIT"
        if ((USE_SYSTEMCTL)); then systemctl daemon-reload; fi
    fi
    rm -rf "$OPT_DIR"
    rm -f "$ROOT/usr/local/bin/kassabro" "$JOURNALD_DROPIN"
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

do_journal_limits() {
    require_root
    check_bundle
    install_journal_limits
}

do_share() {
    require_root
    check_bundle
    check_python
    ensure_accounts
    install_dirs
    ensure_dir "$ETC_DIR" 0750 "root:$SERVICE_USER"
    install_share
}

main() {
    parse_args "$@"
    case "$ACTION" in
        install) do_install ;;
        upgrade) do_upgrade ;;
        uninstall) do_uninstall ;;
        journal-limits) do_journal_limits ;;
        share) do_share ;;
    esac
}

main "$@"
