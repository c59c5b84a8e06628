/*
 * A TLS server built the way Apache's prefork MPM runs mod_nss, for the integration tests:
 *   nss_prefork DBDIR NICKNAME PINFILE WORKERS [USER]
 * The parent initialises NSS, logs in with a mod_nss pin file ("token label:PIN" lines, read
 * once, as mod_nss keeps the PINs in memory for its children), finds the server's certificate
 * and key by nickname, opens the listening socket and forks WORKERS children. Each child
 * becomes USER when one is given (Apache drops privileges before mod_nss's child init), then
 * re-initialises the PKCS#11 modules (SECMOD_RestartModules, which is
 * what NSS_InitContext does in a forked process), logs in again, signs once with the key its
 * parent found and once with a key it finds itself (each signature verified with the
 * certificate's public key), prints "ready PID", then accepts TLS connections on the shared
 * socket and answers each request with "served by PID". The port is printed first, as
 * "port N". On SIGUSR1 the parent forks one more worker, as Apache does when it needs more
 * children (the new one inherits the parent's state of the time, login included). On SIGTERM
 * the parent stops the children; each prints "PID: N handshakes, M failed". The exit status
 * is 0 when every child started, passed its checks and exited 0.
 */
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cert.h>
#include <cryptohi.h>
#include <keyhi.h>
#include <nss.h>
#include <pk11pub.h>
#include <prerror.h>
#include <private/pprio.h>
#include <secmod.h>
#include <ssl.h>
#include <sslproto.h>

#define MAX_WORKERS 16

static char pin_lines[4096]; /* the pin file, read by the parent */
static volatile sig_atomic_t stopping, spawn;

static void
on_usr1(int sig)
{
	(void)sig;
	spawn = 1;
}

static void
on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

/*
 * mod_nss's pin file rule: a line matches when it starts with the token's label, the PIN is
 * what follows the first ':', trimmed, and the last matching line wins.
 */
static char *
get_pin(PK11SlotInfo *slot, PRBool retry, void *arg)
{
	const char *label = PK11_GetTokenName(slot);
	char lines[sizeof(pin_lines)], *line, *save = NULL, *pin = NULL;

	(void)arg;
	if (retry)
		return NULL;
	memcpy(lines, pin_lines, sizeof(lines));
	for (line = strtok_r(lines, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':'), *end;

		if (colon == NULL || strncmp(line, label, strlen(label)) != 0)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		end = colon + strlen(colon);
		while (end > colon && (end[-1] == '\r' || end[-1] == ' '))
			*--end = '\0';
		if (pin != NULL)
			PORT_Free(pin);
		pin = PORT_Strdup(colon);
	}
	explicit_bzero(lines, sizeof(lines));
	return pin;
}

static int
read_pin_file(const char *path)
{
	FILE *fp = fopen(path, "r");
	size_t n;

	if (fp == NULL) {
		perror(path);
		return -1;
	}
	n = fread(pin_lines, 1, sizeof(pin_lines) - 1, fp);
	pin_lines[n] = '\0';
	fclose(fp);
	return 0;
}

/* Becomes user, as Apache's children do before its modules' child init. */
static int
become(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (pw == NULL) {
		fprintf(stderr, "nss_prefork: no user %s\n", user);
		return -1;
	}
	if (setgid(pw->pw_gid) != 0 || initgroups(user, pw->pw_gid) != 0 ||
	    setuid(pw->pw_uid) != 0) {
		perror("nss_prefork: dropping privileges");
		return -1;
	}
	return 0;
}

static void
report(const char *what)
{
	PRErrorCode err = PR_GetError();

	fprintf(stderr, "nss_prefork[%d]: %s: %s (%d)\n", (int)getpid(), what,
	        PR_ErrorToName(err) != NULL ? PR_ErrorToName(err) : "?", (int)err);
}

/* The certificate by nickname, a login to its token (with the pin file), and its key. */
static int
find_cert_and_key(const char *nickname, CERTCertificate **cert, SECKEYPrivateKey **key)
{
	*cert = PK11_FindCertFromNickname(nickname, NULL);
	if (*cert == NULL) {
		report("PK11_FindCertFromNickname");
		return -1;
	}
	if (PK11_Authenticate((*cert)->slot, PR_TRUE, NULL) != SECSuccess) {
		report("PK11_Authenticate");
		return -1;
	}
	*key = PK11_FindKeyByAnyCert(*cert, NULL);
	if (*key == NULL) {
		report("PK11_FindKeyByAnyCert");
		return -1;
	}
	return 0;
}

/* Signs a digest with key and verifies it with the certificate's public key. */
static int
sign_and_verify(SECKEYPrivateKey *key, CERTCertificate *cert)
{
	unsigned char digest[32], sigbuf[512];
	SECItem d = {siBuffer, digest, sizeof(digest)};
	SECItem sig = {siBuffer, sigbuf, 0};
	SECKEYPublicKey *pub;
	int len, ok;

	if (PK11_GenerateRandom(digest, sizeof(digest)) != SECSuccess)
		return -1;
	len = PK11_SignatureLen(key);
	if (len <= 0 || (size_t)len > sizeof(sigbuf))
		return -1;
	sig.len = (unsigned)len;
	if (PK11_Sign(key, &sig, &d) != SECSuccess) {
		report("PK11_Sign");
		return -1;
	}
	pub = CERT_ExtractPublicKey(cert);
	if (pub == NULL)
		return -1;
	ok = PK11_Verify(pub, &sig, &d, NULL) == SECSuccess;
	SECKEY_DestroyPublicKey(pub);
	if (!ok)
		report("PK11_Verify");
	return ok ? 0 : -1;
}

static PRFileDesc *
server_model(CERTCertificate *cert, SECKEYPrivateKey *key)
{
	SSLVersionRange range = {SSL_LIBRARY_VERSION_TLS_1_2, SSL_LIBRARY_VERSION_TLS_1_3};
	PRFileDesc *model = SSL_ImportFD(NULL, PR_NewTCPSocket());

	if (model == NULL || SSL_OptionSet(model, SSL_SECURITY, PR_TRUE) != SECSuccess ||
	    SSL_OptionSet(model, SSL_HANDSHAKE_AS_SERVER, PR_TRUE) != SECSuccess ||
	    SSL_OptionSet(model, SSL_HANDSHAKE_AS_CLIENT, PR_FALSE) != SECSuccess ||
	    SSL_VersionRangeSet(model, &range) != SECSuccess ||
	    SSL_ConfigServerCert(model, cert, key, NULL, 0) != SECSuccess) {
		report("server socket options");
		return NULL;
	}
	return model;
}

/* One connection: handshake, read the request, answer, close. 0 when the handshake passed. */
static int
serve_one(PRFileDesc *model, int fd)
{
	char buf[4096], reply[128];
	PRFileDesc *tcp, *ssl;
	int n, rc = 0;

	tcp = PR_ImportTCPSocket(fd);
	if (tcp == NULL) {
		close(fd);
		return -1;
	}
	ssl = SSL_ImportFD(model, tcp);
	if (ssl == NULL) {
		PR_Close(tcp);
		return -1;
	}
	SSL_ResetHandshake(ssl, PR_TRUE);
	if (SSL_ForceHandshakeWithTimeout(ssl, PR_SecondsToInterval(30)) != SECSuccess) {
		report("handshake");
		rc = -1;
	} else {
		/* A request is whatever arrives first (strsclnt and tstclnt send one). */
		n = PR_Recv(ssl, buf, sizeof(buf), 0, PR_SecondsToInterval(5));
		(void)n;
		n = snprintf(reply, sizeof(reply),
		             "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nserved by %d\n",
		             (int)getpid());
		PR_Send(ssl, reply, n, 0, PR_SecondsToInterval(5));
	}
	PR_Close(ssl);
	return rc;
}

static int
child(int lfd, const char *nickname, const char *user, CERTCertificate *parent_cert,
      SECKEYPrivateKey *parent_key)
{
	CERTCertificate *cert;
	SECKEYPrivateKey *key;
	PRFileDesc *model;
	unsigned long served = 0, failed = 0;
	struct sigaction sa;

	if (user != NULL && become(user) != 0)
		return 1;
	/* The modules the parent initialised must be initialised again in this process. */
	if (SECMOD_RestartModules(PR_FALSE) != SECSuccess) {
		report("SECMOD_RestartModules");
		return 1;
	}
	if (find_cert_and_key(nickname, &cert, &key) != 0)
		return 1;
	if (sign_and_verify(key, cert) != 0) {
		fprintf(stderr, "nss_prefork[%d]: the key found in the child does not sign\n",
		        (int)getpid());
		return 1;
	}
	if (sign_and_verify(parent_key, parent_cert) != 0) {
		fprintf(stderr, "nss_prefork[%d]: the key the parent found does not sign\n",
		        (int)getpid());
		return 1;
	}
	model = server_model(cert, key);
	if (model == NULL)
		return 1;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	while (!stopping) {
		/* A SIGTERM between the test of stopping and accept() would leave accept()
		 * waiting: wait in short steps instead. */
		struct pollfd pfd = {.fd = lfd, .events = POLLIN};
		int fd;

		if (poll(&pfd, 1, 200) <= 0)
			continue;
		/* The listening socket does not block: another worker may have taken the
		 * connection. The accepted one blocks, as NSPR expects here. */
		if ((fd = accept4(lfd, NULL, NULL, 0)) < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			perror("accept");
			failed++;
			break;
		}
		if (serve_one(model, fd) == 0)
			served++;
		else
			failed++;
	}
	printf("%d: %lu handshakes, %lu failed\n", (int)getpid(), served, failed);
	fflush(stdout);
	PR_Close(model);
	SECKEY_DestroyPrivateKey(key);
	CERT_DestroyCertificate(cert);
	return failed == 0 ? 0 : 2;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
	                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(addr);
	pid_t pids[MAX_WORKERS];
	CERTCertificate *cert;
	SECKEYPrivateKey *key;
	struct sigaction sa;
	int workers, lfd, i, rc = 0;

	if ((argc != 5 && argc != 6) || (workers = atoi(argv[4])) < 1 || workers > MAX_WORKERS) {
		fprintf(stderr, "usage: nss_prefork DBDIR NICKNAME PINFILE WORKERS(1-%d) [USER]\n",
		        MAX_WORKERS);
		return 2;
	}
	if (read_pin_file(argv[3]) != 0)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* The parent: what mod_nss does in Apache's post-config hook. */
	PK11_SetPasswordFunc(get_pin);
	if (NSS_Initialize(argv[1], "", "", SECMOD_DB, NSS_INIT_READONLY) != SECSuccess) {
		report("NSS_Initialize");
		return 1;
	}
	if (NSS_SetDomesticPolicy() != SECSuccess ||
	    SSL_ConfigMPServerSIDCache(256, 0, 0, NULL) != SECSuccess) {
		report("SSL set-up");
		return 1;
	}
	if (find_cert_and_key(argv[2], &cert, &key) != 0)
		return 1;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    listen(lfd, 128) != 0 || getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
		perror("listen");
		return 1;
	}
	printf("port %d\n", ntohs(addr.sin_port));

	for (i = 0; i < workers; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("fork");
			return 1;
		}
		if (pids[i] == 0)
			_exit(child(lfd, argv[2], argc == 6 ? argv[5] : NULL, cert, key));
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	while (!stopping) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (spawn && workers < MAX_WORKERS) {
			spawn = 0;
			if ((pids[workers] = fork()) == 0)
				_exit(child(lfd, argv[2], argc == 6 ? argv[5] : NULL, cert, key));
			if (pids[workers] > 0)
				workers++;
		}
		if (pid > 0) { /* a child died before it was told to stop */
			fprintf(stderr, "nss_prefork: worker %d exited early (status 0x%x)\n",
			        (int)pid, status);
			rc = 1;
			for (i = 0; i < workers; i++)
				if (pids[i] == pid)
					pids[i] = 0;
			stopping = 1;
		}
	}
	close(lfd);
	for (i = 0; i < workers; i++) {
		int status;

		if (pids[i] == 0)
			continue;
		kill(pids[i], SIGTERM);
		if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0) {
			fprintf(stderr, "nss_prefork: worker %d ended with status 0x%x\n",
			        (int)pids[i], status);
			rc = 1;
		}
	}
	SECKEY_DestroyPrivateKey(key);
	CERT_DestroyCertificate(cert);
	if (NSS_Shutdown() != SECSuccess)
		report("NSS_Shutdown");
	return rc;
}
