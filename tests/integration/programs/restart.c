/* SA_RESTART, checked by tests/integration/test_signals.py: a recv blocked on a
   server that answers only once the SIGALRM handler has written to it is
   restarted with SA_RESTART and fails with EINTR without it. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int conn;

static void poke(int sig) { write(conn, "x", 1); }

static void try_recv(int port, int flags) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    conn = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(conn, (struct sockaddr *)&addr, sizeof addr)) { perror("connect"); exit(1); }
    struct sigaction sa = {.sa_handler = poke, .sa_flags = flags};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_value = {0, 100000}};
    setitimer(ITIMER_REAL, &it, NULL);
    char buf[16] = {0};
    ssize_t n = recv(conn, buf, sizeof buf - 1, 0);
    printf("%s: %zd %s\n", flags ? "restart" : "no restart", n, n < 0 ? strerror(errno) : buf);
    close(conn);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int port = atoi(argv[1]);
    try_recv(port, SA_RESTART);
    try_recv(port, 0);
    return 0;
}
