#include "transport.h"
#include "err.h"
#include "thread.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

/* Waits until fd is ready for events (or is closed) or deadline_ns has passed. 0, or
 * P11MUX_ERR_TIMEOUT, or P11MUX_ERR_IO. */
static int
wait_fd(int fd, short events, uint64_t deadline_ns)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	uint64_t now;
	int ms, r;

	/* Past the deadline, one more look (poll with no wait): a peer that answered in time is
	 * not taken for a hung one because this thread ran late. */
	for (;;) {
		now = p11mux_now_ns();
		ms = now >= deadline_ns ? 0 : (int)((deadline_ns - now) / 1000000 + 1);
		r = poll(&pfd, 1, ms);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return P11MUX_ERR_IO;
		if (r == 0 && ms == 0)
			return P11MUX_ERR_TIMEOUT;
	}
}

int
p11mux_frame_send_until(int fd, const struct p11mux_buf *b, uint64_t deadline_ns)
{
	size_t len = p11mux_buf_len(b), done = 0, total = len + 4;
	uint8_t hdr[4];
	struct iovec iov[2];
	struct msghdr mh;
	ssize_t n;
	int r;

	if (len > UINT32_MAX)
		return P11MUX_ERR_TOO_BIG;
	hdr[0] = len >> 24;
	hdr[1] = len >> 16;
	hdr[2] = len >> 8;
	hdr[3] = len;
	while (done < total) {
		int k = 0;

		memset(&mh, 0, sizeof(mh));
		if (done < 4) {
			iov[k].iov_base = hdr + done;
			iov[k++].iov_len = 4 - done;
			iov[k].iov_base = (void *)p11mux_buf_data(b);
			iov[k++].iov_len = len;
		} else {
			iov[k].iov_base = (void *)(p11mux_buf_data(b) + (done - 4));
			iov[k++].iov_len = total - done;
		}
		mh.msg_iov = iov;
		mh.msg_iovlen = k;
		/* With a deadline the socket is never waited on inside sendmsg, so that a peer
		 * that reads a byte now and then cannot stretch the time. */
		n = sendmsg(fd, &mh, MSG_NOSIGNAL | (deadline_ns != 0 ? MSG_DONTWAIT : 0));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (deadline_ns != 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				if ((r = wait_fd(fd, POLLOUT, deadline_ns)) != 0)
					return r;
				continue;
			}
			return P11MUX_ERR_IO;
		}
		done += (size_t)n;
	}
	return 0;
}

int
p11mux_frame_send(int fd, const struct p11mux_buf *b)
{
	return p11mux_frame_send_until(fd, b, 0);
}

/* Reads exactly len bytes, before deadline_ns when it is not 0. P11MUX_ERR_CLOSED if the
 * stream ends first. */
static int
read_full(int fd, uint8_t *p, size_t len, uint64_t deadline_ns)
{
	ssize_t n;
	int r;

	while (len > 0) {
		if (deadline_ns != 0 && (r = wait_fd(fd, POLLIN, deadline_ns)) != 0)
			return r;
		n = read(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return P11MUX_ERR_IO;
		}
		if (n == 0)
			return P11MUX_ERR_CLOSED;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
p11mux_frame_recv_until(int fd, struct p11mux_buf *b, size_t max, uint64_t deadline_ns)
{
	uint8_t hdr[4], *p;
	uint32_t len;
	int r;

	/* The buffer is left alone until a header arrives, so that a request whose connection
	 * turned out dead can be sent again from it. */
	if ((r = read_full(fd, hdr, sizeof(hdr), deadline_ns)) != 0)
		return r;
	p11mux_buf_reset(b);
	len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (len > max)
		return P11MUX_ERR_TOO_BIG;
	if ((r = p11mux_buf_reserve(b, len, &p)) != 0)
		return r;
	/* A frame cut short is not a clean close: the caller must not resend. */
	if ((r = read_full(fd, p, len, deadline_ns)) == P11MUX_ERR_CLOSED)
		return P11MUX_ERR_SHORT;
	return r;
}

int
p11mux_frame_recv(int fd, struct p11mux_buf *b, size_t max)
{
	return p11mux_frame_recv_until(fd, b, max, 0);
}

int
p11mux_unix_connect(const char *path)
{
	struct sockaddr_un sa;
	int fd, saved;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EINTR)
			continue;
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}
