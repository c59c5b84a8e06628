#!/usr/bin/env bash
# OpenSSH through the pool: ssh-keygen -D lists the pool's RSA and ECDSA keys; ssh-agent (its
# ssh-pkcs11-helper loads the shim) takes them with ssh-add -s and logs in to an sshd of this
# test's own with each; ssh loads the shim itself (PKCS11Provider) and logs in; and ssh-keygen
# -s signs user certificates with either pool key as the CA, which that sshd accepts
# (TrustedUserCAKeys). The PIN goes in through SSH_ASKPASS (SSH_ASKPASS_REQUIRE=force).
. "$(dirname "$0")/lib.sh"
SSHD=/usr/sbin/sshd
[ -x "$SSHD" ] || fail "openssh-server is not installed (scripts/deps.sh)"
it_setup
AGENT=
SSHD_PID=
cleanup() {
	[ -z "$AGENT" ] || kill "$AGENT" 2>/dev/null || true
	[ -z "$SSHD_PID" ] || kill "$SSHD_PID" 2>/dev/null || true
	test_cleanup
}
trap cleanup EXIT
start_daemon
ME=$(id -un)

# ssh-keygen -D: the pool's two public keys, the same as those the tokens were made from.
ssh-keygen -D "$SHIM" > "$WORK/pool.keys" 2> "$WORK/keygen-D.err" ||
	fail "ssh-keygen -D: $(cat "$WORK/keygen-D.err")"
{
	ssh-keygen -i -m PKCS8 -f "$KEYS/rsa.pub.pem"
	ssh-keygen -i -m PKCS8 -f "$KEYS/ec.pub.pem"
} | sort > "$WORK/expected.keys"
diff <(awk '{print $1, $2}' "$WORK/pool.keys" | sort) "$WORK/expected.keys" > /dev/null ||
	fail "ssh-keygen -D lists other keys: $(cat "$WORK/pool.keys")"
grep '^ssh-rsa ' "$WORK/pool.keys" > "$WORK/id_rsa.pub"
grep '^ecdsa-sha2-nistp256 ' "$WORK/pool.keys" > "$WORK/id_ecdsa.pub"
pass "ssh-keygen -D lists the pool's RSA and ECDSA keys, equal to the tokens' keys"

# fp FILE: the SHA256 fingerprint of a public key file, as sshd logs it.
fp() {
	ssh-keygen -l -E sha256 -f "$1" | awk '{print $2}'
}

printf '#!/bin/sh\necho %s\n' "$PIN" > "$WORK/askpass"
chmod 700 "$WORK/askpass"
export SSH_ASKPASS="$WORK/askpass" SSH_ASKPASS_REQUIRE=force

# An sshd of our own on 127.0.0.1. Run as root, it needs its privilege separation directory
# (systemd's tmpfiles would make it at boot); run as another user, it can log in only that
# user, which is the one we use.
if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ]; then
	mkdir -m 0755 /run/sshd
fi
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
PORT=$(free_port)
cat > "$WORK/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
TrustedUserCAKeys $WORK/trusted_ca
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel VERBOSE
CONF
: > "$WORK/authorized_keys"
: > "$WORK/trusted_ca"
"$SSHD" -D -e -f "$WORK/sshd_config" > "$WORK/sshd.log" 2>&1 &
SSHD_PID=$!
wait_until 30 grep -q "Server listening on 127.0.0.1 port $PORT" "$WORK/sshd.log" ||
	fail "sshd did not start: $(cat "$WORK/sshd.log")"

# login [ssh options...]: runs `true` on our sshd as this user, host key not checked. (ssh
# keeps the first value of an option: the caller's come first.)
login() {
	timeout 30 ssh -F /dev/null "$@" -o LogLevel=ERROR -o User="$ME" -o Port="$PORT" -o BatchMode=yes \
		-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
		127.0.0.1 true < /dev/null
}

# accepted TYPE FINGERPRINT: sshd logged a public key login of this user with that key.
accepted() {
	grep -q "Accepted publickey for $ME from 127.0.0.1 port [0-9]* ssh2: $1 $2" "$WORK/sshd.log"
}

# ssh-agent with the shim allowed; ssh-add -s has it load the pool's keys in its
# ssh-pkcs11-helper (the agent resolves the path, so allow the resolved one).
export SSH_AUTH_SOCK="$WORK/agent.sock"
ssh-agent -D -a "$SSH_AUTH_SOCK" -P "$(realpath "$SHIM")" > "$WORK/agent.log" 2>&1 &
AGENT=$!
wait_until 30 test -S "$SSH_AUTH_SOCK" || fail "ssh-agent did not start: $(cat "$WORK/agent.log")"
timeout 30 ssh-add -s "$SHIM" < /dev/null > "$WORK/ssh-add.log" 2>&1 ||
	fail "ssh-add -s: $(cat "$WORK/ssh-add.log") $(cat "$WORK/agent.log")"
diff <(ssh-add -L | awk '{print $1, $2}' | sort) "$WORK/expected.keys" > /dev/null ||
	fail "ssh-add -L: $(ssh-add -L)"
pass "ssh-add -s loads the pool's two keys into ssh-agent"

# A login with each key in turn, the agent signing (no private key file exists: IdentityFile
# names id_KEY, of which only id_KEY.pub is there). Without the agent the same login fails.
for key in rsa:RSA ecdsa:ECDSA; do
	name=${key%%:*}
	type=${key#*:}
	cp "$WORK/id_$name.pub" "$WORK/authorized_keys"
	login -o IdentityFile="$WORK/id_$name" -o PKCS11Provider=none > "$WORK/ssh.log" 2>&1 ||
		fail "ssh with the $type key through the agent: $(cat "$WORK/ssh.log") $(tail -5 "$WORK/sshd.log")"
	accepted "$type" "$(fp "$WORK/id_$name.pub")" ||
		fail "sshd did not log the $type login: $(cat "$WORK/sshd.log")"
done
SSH_AUTH_SOCK='' login -o IdentityFile="$WORK/id_ecdsa" -o PKCS11Provider=none > /dev/null 2>&1 &&
	fail "the login succeeded without the agent"
pass "ssh logs in to sshd with the pool's RSA and ECDSA keys through ssh-agent"

# ssh with PKCS11Provider: ssh loads the shim itself and asks for the PIN.
cp "$WORK/id_rsa.pub" "$WORK/authorized_keys"
before=$(grep -c "Accepted publickey" "$WORK/sshd.log")
SSH_AUTH_SOCK='' login -o IdentityFile="$WORK/id_rsa" -o PKCS11Provider="$SHIM" -o BatchMode=no \
	> "$WORK/ssh.log" 2>&1 || fail "ssh -o PKCS11Provider: $(cat "$WORK/ssh.log")"
if [ "$(grep -c "Accepted publickey" "$WORK/sshd.log")" -le "$before" ] ||
	! accepted RSA "$(fp "$WORK/id_rsa.pub")"; then
	fail "sshd did not log the PKCS11Provider login: $(tail -5 "$WORK/sshd.log")"
fi
pass "ssh -o PKCS11Provider=shim logs in with the pool's RSA key"

# A user CA in the pool: ssh-keygen -s CA.pub -D shim signs a user key's certificate with the
# pool's key; ssh-keygen -L names that CA, and sshd trusting the CA accepts the certificate
# (no authorized key: the certificate alone lets the user in).
: > "$WORK/authorized_keys"
for key in rsa:RSA ecdsa:ECDSA; do
	name=${key%%:*}
	type=${key#*:}
	ca="$WORK/id_$name.pub"
	user="$WORK/user_$name"
	ssh-keygen -q -t ed25519 -N '' -f "$user"
	timeout 30 ssh-keygen -s "$ca" -D "$SHIM" -I "p11mux-$name" -n "$ME" "$user.pub" < /dev/null \
		> "$WORK/sign.log" 2>&1 || fail "ssh-keygen -s with the pool's $type key: $(cat "$WORK/sign.log")"
	ssh-keygen -L -f "$user-cert.pub" > "$WORK/cert.txt" || fail "ssh-keygen -L on the $type-signed certificate"
	grep -q "Signing CA: $type $(fp "$ca")" "$WORK/cert.txt" ||
		fail "the certificate names another CA: $(cat "$WORK/cert.txt")"
	cp "$ca" "$WORK/trusted_ca"
	SSH_AUTH_SOCK='' login -o IdentityFile="$user" > "$WORK/ssh.log" 2>&1 ||
		fail "ssh with the certificate signed by the $type CA: $(cat "$WORK/ssh.log") $(tail -5 "$WORK/sshd.log")"
	grep -q "Accepted publickey for $ME .* ID p11mux-$name (serial 0) CA $type $(fp "$ca")" \
		"$WORK/sshd.log" ||
		fail "sshd did not log the certificate login: $(tail -5 "$WORK/sshd.log")"
done
pass "ssh-keygen -s signs user certificates with the pool's RSA and ECDSA keys; sshd accepts them"

kill "$AGENT"
AGENT=
kill "$SSHD_PID"
SSHD_PID=
stop_daemon
