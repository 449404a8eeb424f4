/*
 * Minimal epoll echo server: the ceiling the Python servers are measured against.
 *
 * Usage: epoll_echo HOST PORT
 *
 * One thread, level-triggered epoll, non-blocking sockets. Every byte read is
 * written back in order; when the peer's socket buffer is full the unsent rest
 * is kept per connection and reading from that connection pauses until it has
 * drained (so a fast sender cannot make the server buffer without bound). On
 * the peer's EOF the server finishes echoing, shuts down its write side and
 * closes. Errors on one connection close that connection only. SIGTERM/SIGINT
 * end the process (the default action): the harness needs no drain here.
 * Prints one line ("listening HOST:PORT") once it accepts, nothing per message.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes per read: as large as asyncio's selector loop reads (256 KiB), so a 100 KiB
 * message usually takes one read and one write; a ceiling must not lose on buffer size. */
#define BUF_SIZE (256 * 1024)
/* Events handled per epoll_wait call; more than the benchmark's 16 connections. */
#define MAX_EVENTS 64

struct conn {
    int fd;
    size_t pending_off; /* bytes of buf already written back */
    size_t pending_len; /* bytes of buf read but not yet written back */
    char buf[BUF_SIZE];
};

static int epfd;

static void close_conn(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static void watch(struct conn *c, int op, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, op, c->fd, &ev);
}

/* Write the pending bytes; returns 0 when all went out, 1 when the socket is full, -1 on error. */
static int flush(struct conn *c) {
    while (c->pending_len > 0) {
        ssize_t n = send(c->fd, c->buf + c->pending_off, c->pending_len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            return -1;
        }
        c->pending_off += (size_t)n;
        c->pending_len -= (size_t)n;
    }
    c->pending_off = 0;
    return 0;
}

static void on_event(struct conn *c, unsigned events) {
    if (c->pending_len > 0 || (events & EPOLLOUT)) {
        int r = flush(c);
        if (r < 0) { close_conn(c); return; }
        if (r > 0) return; /* still full: keep waiting for EPOLLOUT */
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
        if (!(events & EPOLLIN)) return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t n = recv(c->fd, c->buf, BUF_SIZE, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            close_conn(c);
            return;
        }
        if (n == 0) { /* EOF: reading pauses while bytes are pending, so all were echoed */
            shutdown(c->fd, SHUT_WR);
            close_conn(c);
            return;
        }
        c->pending_off = 0;
        c->pending_len = (size_t)n;
        int r = flush(c);
        if (r < 0) { close_conn(c); return; }
        if (r > 0) watch(c, EPOLL_CTL_MOD, EPOLLOUT); /* pause reading until drained */
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "epoll_echo: error: %s is not an IPv4 address\n", argv[1]);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        perror("epoll_echo: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    printf("listening %s:%s\n", argv[1], argv[2]);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_echo: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = malloc(sizeof *c);
                    if (c == NULL) { close(fd); continue; }
                    c->fd = fd;
                    c->pending_off = c->pending_len = 0;
                    watch(c, EPOLL_CTL_ADD, EPOLLIN);
                }
            } else {
                on_event(events[i].data.ptr, events[i].events);
            }
        }
    }
}
