/*
 * The first process inside an rpc-server's bubblewrap sandbox (docs/architecture.md, "Sharding"). The sandbox
 * has a network namespace of its own, so the node cannot reach the server's TCP port: this launcher starts the
 * server on the sandbox's loopback and relays each connection accepted on a Unix socket (in a directory bound
 * into the sandbox) to it.
 *
 *   rpc-launcher SOCKET PORT SERVER [ARG...]   runs SERVER ARG... (which listens on 127.0.0.1:PORT), relays SOCKET
 *   rpc-launcher --probe                       checks that the sandbox has a loopback; prints "sandbox ok"
 *
 * Prints "ready" on stdout once SOCKET listens; the server's own stdout goes to stderr, so that stdout carries that
 * line alone. Exits when the server does, with its exit code or 128+N after signal N, and says which on stderr.
 * Core dumps are off for both (RLIMIT_CORE 0).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Connections relayed at once; more are closed as they arrive (llama.cpp keeps one per device). */
#define MAX_LINKS 8
/* Bytes in flight per direction of a connection. */
#define BUFFER_BYTES (128 * 1024)
#define READY_POLL_US 10000
/* A half whose end of file has passed on. */
#define DONE ((size_t) -1)

/* One direction of a link: bytes read from `from`, not yet written to `to`. */
struct half {
    int from, to, eof;
    size_t start, end;
    char *data;
};

/* A Unix connection from the node (fds[0]) and its TCP connection to the server (fds[1]). */
struct link {
    int fds[2], used, connected;
    struct half halves[2];
};

static struct link links[MAX_LINKS];
static pid_t server = -1;

static void die(const char *what) {
    fprintf(stderr, "rpc-launcher: %s: %s\n", what, strerror(errno));
    exit(125);
}

static const char *signal_name(int number) {
    switch (number) {
#define NAME(name) case name: return #name;
        NAME(SIGSEGV) NAME(SIGABRT) NAME(SIGBUS) NAME(SIGILL) NAME(SIGFPE) NAME(SIGSYS) NAME(SIGTRAP)
        NAME(SIGKILL) NAME(SIGTERM) NAME(SIGINT) NAME(SIGHUP) NAME(SIGPIPE) NAME(SIGXCPU) NAME(SIGXFSZ)
    }
    return "another signal";
}

/* Reports how the server ended and exits the same way (128+N for signal N, as a shell would). */
static void report_exit(int status) {
    if (WIFSIGNALED(status)) {
        int number = WTERMSIG(status);
        fprintf(stderr, "rpc-server killed by signal %d (%s)\n", number, signal_name(number));
        exit(128 + number);
    }
    fprintf(stderr, "rpc-server exited with code %d\n", WEXITSTATUS(status));
    exit(WEXITSTATUS(status));
}

/* A TCP socket to 127.0.0.1:port; connecting (EINPROGRESS) when non-blocking. -1 if refused. */
static int connect_server(int port, int nonblocking) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *) &address, sizeof address) == 0 || errno == EINPROGRESS)
        return fd;
    close(fd);
    return -1;
}

static void close_link(struct link *link) {
    for (int side = 0; side < 2; side++) {
        close(link->fds[side]);
        free(link->halves[side].data);
    }
    memset(link, 0, sizeof *link);
}

static void open_link(int client, int port) {
    for (int index = 0; index < MAX_LINKS; index++) {
        struct link *link = &links[index];
        if (link->used)
            continue;
        int upstream = connect_server(port, 1);
        if (upstream < 0)
            break;
        *link = (struct link) {.fds = {client, upstream}, .used = 1};
        for (int side = 0; side < 2; side++) {
            link->halves[side] = (struct half) {.from = link->fds[side], .to = link->fds[1 - side], .data = malloc(BUFFER_BYTES)};
            if (link->halves[side].data == NULL)
                die("malloc");
        }
        return;
    }
    close(client);
}

static int pending(const struct half *half) {
    return half->start < half->end && half->end != DONE;
}

/* Moves what it can of one direction; 0 when the link broke. */
static int pump(struct half *half, short readable) {
    if (readable && !half->eof && half->start == half->end) {
        ssize_t count = recv(half->from, half->data, BUFFER_BYTES, 0);
        if (count < 0)
            return errno == EAGAIN || errno == EINTR;
        half->start = 0;
        half->end = (size_t) count;
        if (count == 0)
            half->eof = 1;
    }
    if (pending(half)) { /* at once after a read: one poll round less per message */
        ssize_t count = send(half->to, half->data + half->start, half->end - half->start, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (count < 0)
            return errno == EAGAIN || errno == EINTR;
        half->start += (size_t) count;
    }
    if (half->eof && half->start == half->end && half->end != DONE) {
        shutdown(half->to, SHUT_WR); /* the half-close passes on, once */
        half->end = half->start = DONE;
    }
    return 1;
}

static void relay(int listener, int pidfd, int port) {
    for (;;) {
        struct pollfd fds[2 + 2 * MAX_LINKS] = {{.fd = listener, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
        for (int index = 2; index < 2 + 2 * MAX_LINKS; index++)
            fds[index].fd = -1;
        for (int index = 0; index < MAX_LINKS; index++) {
            struct link *link = &links[index];
            for (int side = 0; side < 2 && link->used; side++) {
                struct pollfd *entry = &fds[2 + 2 * index + side];
                if (!link->connected) /* until the server takes the connection */
                    entry->events = side == 1 ? POLLOUT : 0;
                else
                    entry->events = (link->halves[side].eof || pending(&link->halves[side]) ? 0 : POLLIN) |
                        (pending(&link->halves[1 - side]) ? POLLOUT : 0);
                /* a socket we want nothing from is left out: a hang-up would wake poll() in a loop */
                entry->fd = entry->events ? link->fds[side] : -1;
            }
        }
        if (poll(fds, 2 + 2 * MAX_LINKS, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (fds[1].revents) {
            int status;
            if (waitpid(server, &status, 0) == server)
                report_exit(status);
        }
        for (int index = 0; index < MAX_LINKS; index++) {
            struct link *link = &links[index];
            short events[2] = {fds[2 + 2 * index].revents, fds[3 + 2 * index].revents};
            if (!link->used)
                continue;
            if (!link->connected && events[1]) {
                int error = 0;
                socklen_t length = sizeof error;
                getsockopt(link->fds[1], SOL_SOCKET, SO_ERROR, &error, &length);
                if (error != 0) {
                    close_link(link);
                    continue;
                }
                link->connected = 1;
                events[1] = 0;
            }
            if (!link->connected)
                continue;
            int ok = 1;
            for (int side = 0; side < 2 && ok; side++)
                ok = !(events[side] & POLLERR) && pump(&link->halves[side], events[side] & (POLLIN | POLLHUP));
            /* done both ways, or a peer hung up entirely with nothing more to read from it */
            int done = link->halves[0].end == DONE && link->halves[1].end == DONE;
            for (int side = 0; side < 2; side++)
                done |= (events[side] & POLLHUP) && link->halves[side].eof;
            if (!ok || done)
                close_link(link);
        }
        if (fds[0].revents & POLLIN) {
            int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (client >= 0)
                open_link(client, port);
        }
    }
}

/* Inside the sandbox, loopback must be up for the server: bind a port there. */
static int probe(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *) &address, sizeof address) != 0 || listen(fd, 1) != 0)
        die("no loopback in the sandbox");
    printf("sandbox ok\n");
    return 0;
}

int main(int argc, char **argv) {
    struct rlimit no_core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &no_core) != 0)
        die("setrlimit");
    if (argc == 2 && strcmp(argv[1], "--probe") == 0)
        return probe();
    if (argc < 4) {
        fprintf(stderr, "usage: rpc-launcher SOCKET PORT SERVER [ARG...] | --probe\n");
        return 2;
    }
    const char *path = argv[1];
    int port = atoi(argv[2]);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (port <= 0 || port > 65535 || strlen(path) >= sizeof address.sun_path) {
        fprintf(stderr, "rpc-launcher: bad socket path or port\n");
        return 2;
    }
    strcpy(address.sun_path, path);

    server = fork();
    if (server < 0)
        die("fork");
    if (server == 0) {
        /* the server gets stdin, stderr, and stderr again as its stdout; the kernel kills it if we die */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(STDERR_FILENO, STDOUT_FILENO);
#ifdef SYS_close_range
        syscall(SYS_close_range, 3, ~0U, 0); /* ours are close-on-exec already: this is for inherited ones */
#endif
        execv(argv[3], argv + 3);
        fprintf(stderr, "rpc-launcher: cannot run %s: %s\n", argv[3], strerror(errno));
        _exit(127);
    }
    int pidfd = (int) syscall(SYS_pidfd_open, server, 0);
    if (pidfd < 0)
        die("pidfd_open");

    for (;;) {
        int status;
        if (waitpid(server, &status, WNOHANG) == server)
            report_exit(status);
        int fd = connect_server(port, 0);
        if (fd >= 0) {
            close(fd);
            break;
        }
        usleep(READY_POLL_US);
    }

    umask(077);
    unlink(path);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *) &address, sizeof address) != 0 || listen(listener, MAX_LINKS) != 0)
        die(path);
    printf("ready\n");
    fflush(stdout);
    relay(listener, pidfd, port);
}
