#!/bin/sh
# Writes the secrets Asterisk cannot read from the environment, at every start, before
# Asterisk loads its configuration:
#   <dir>/ari_users.conf             the ARI user pbx-control logs in with (ari.conf includes it)
#   <dir>/pjsip_softphone_auth.conf  the auth sections of softphones 1001 and 1002 (pjsip.conf)
#
# Environment:
#   PBX_CONTROL_ASTERISK_USERNAME        ARI user (default pbx-control, as the controller's)
#   PBX_CONTROL_ASTERISK_PASSWORD        ARI password: required, refused when empty
#   PBX_CONTROL_SOFTPHONE_1001_PASSWORD  softphone passwords; when unset or empty a random
#   PBX_CONTROL_SOFTPHONE_1002_PASSWORD  one is written, so that softphone cannot register
#   ASTERISK_CONFIG_OWNER                optional user[:group] to own the files (e.g.
#                                        asterisk:asterisk when this runs as root)
# Each *_PASSWORD may instead be given as *_PASSWORD_FILE, a file holding the value.
#
# Usage: write-ari-users.sh [config dir, default /etc/asterisk]
# Values go into Asterisk's INI syntax as they are, where ';' starts a comment and a line
# break starts a new setting: passwords must be 12 to 128 characters of letters, digits
# and ._~+=@%- only. Nothing is written unless every value is acceptable. Files are 0600.
set -eu

dir="${1:-/etc/asterisk}"

fail() {
    echo "write-ari-users.sh: $*" >&2
    exit 1
}

# value NAME: the variable's value, or the content of the file named by NAME_FILE.
value() {
    eval "v=\${$1:-}"
    eval "f=\${$1_FILE:-}"
    if [ -z "$v" ] && [ -n "$f" ]; then
        [ -r "$f" ] || fail "$1_FILE: cannot read $f"
        v=$(cat "$f")
    fi
    printf '%s' "$v"
}

check_secret() {
    # $1 name, $2 value
    case "$2" in
        *[!A-Za-z0-9._~+=@%-]*) fail "$1 holds a character outside [A-Za-z0-9._~+=@%-]" ;;
    esac
    n=${#2}
    [ "$n" -ge 12 ] || fail "$1 must be at least 12 characters"
    [ "$n" -le 128 ] || fail "$1 must be at most 128 characters"
}

random_secret() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

username=$(value PBX_CONTROL_ASTERISK_USERNAME)
username="${username:-pbx-control}"
case "$username" in
    *[!A-Za-z0-9._-]*) fail "PBX_CONTROL_ASTERISK_USERNAME holds a character outside [A-Za-z0-9._-]" ;;
esac
[ "${#username}" -le 64 ] || fail "PBX_CONTROL_ASTERISK_USERNAME must be at most 64 characters"

ari_password=$(value PBX_CONTROL_ASTERISK_PASSWORD)
[ -n "$ari_password" ] || fail "PBX_CONTROL_ASTERISK_PASSWORD is empty: refusing to start ARI without a password"
check_secret PBX_CONTROL_ASTERISK_PASSWORD "$ari_password"

softphone_password() {
    # $1 user: prints the password to use, random when none is configured
    p=$(value "PBX_CONTROL_SOFTPHONE_$1_PASSWORD")
    if [ -z "$p" ]; then
        echo "write-ari-users.sh: PBX_CONTROL_SOFTPHONE_$1_PASSWORD unset: softphone $1 gets a random password" >&2
        random_secret
        return
    fi
    check_secret "PBX_CONTROL_SOFTPHONE_$1_PASSWORD" "$p"
    printf '%s' "$p"
}

pw1001=$(softphone_password 1001)
pw1002=$(softphone_password 1002)

[ -d "$dir" ] || fail "no such directory: $dir"

# install NAME: moves the temporary file into place with mode 0600 (and the owner asked for).
install_file() {
    chmod 600 "$dir/.$1.tmp"
    if [ -n "${ASTERISK_CONFIG_OWNER:-}" ]; then
        chown "$ASTERISK_CONFIG_OWNER" "$dir/.$1.tmp"
    fi
    mv -f "$dir/.$1.tmp" "$dir/$1"
}

umask 077

cat > "$dir/.ari_users.conf.tmp" <<CONF
; Written by write-ari-users.sh at start from the environment. Never commit this file.
[$username]
type = user
read_only = no
password_format = plain
password = $ari_password
CONF
install_file ari_users.conf

cat > "$dir/.pjsip_softphone_auth.conf.tmp" <<CONF
; Written by write-ari-users.sh at start from the environment. Never commit this file.
[1001-auth]
type = auth
auth_type = userpass
username = 1001
password = $pw1001

[1002-auth]
type = auth
auth_type = userpass
username = 1002
password = $pw1002
CONF
install_file pjsip_softphone_auth.conf

echo "write-ari-users.sh: wrote $dir/ari_users.conf and $dir/pjsip_softphone_auth.conf" >&2
