/* Signal delivery as Linux does it, checked by tests/integration/test_signals.py:
   each line is printed the same on the host and in a USF. Ends killed by SIGALRM. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ucontext.h>
#include <sys/time.h>
#include <errno.h>
#include <time.h>

static volatile int depth, max_depth, info_ok, on_alt, nodefer_seen, alarms;
static char altstack[65536];

static void info_handler(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    info_ok = sig == SIGUSR1 && si->si_signo == SIGUSR1 && si->si_code == SI_TKILL
              && si->si_pid == getpid() && uc->uc_mcontext.gregs[REG_RIP] != 0
              && uc->uc_mcontext.fpregs != NULL;
    char here;
    on_alt = &here >= altstack && &here < altstack + sizeof altstack;
    stack_t ss; sigaltstack(NULL, &ss);
    on_alt = on_alt && (ss.ss_flags & SS_ONSTACK);
}

static void nodefer_handler(int sig) {
    depth++;
    if (depth > max_depth) max_depth = depth;
    if (depth < 3) raise(SIGUSR2);   /* SA_NODEFER: delivered inside the handler */
    depth--;
}

static void masked_handler(int sig) {
    sigset_t cur; sigprocmask(SIG_BLOCK, NULL, &cur);
    nodefer_seen = sigismember(&cur, SIGHUP) && sigismember(&cur, SIGINT);
}

static void alarm_handler(int sig) { alarms++; }

static volatile double clobber_sink;
static void clobber_handler(int sig) {
    alarms++;
    /* Use the vector registers and the flags the interrupted code holds. */
    volatile double a = 7.0, b = 9.0; clobber_sink = a * b + clobber_sink;
}

/* Spin with known values in registers the trampoline and handlers use
   (rcx, r11, xmm0) while a periodic timer interrupts; report any change. */
static int registers_survive(long loops) {
    unsigned long rcx_out, r11_out, r8_out; double x_out;
    double x_in = 2.5;
    __asm__ volatile(
        "mov $0x1111, %%rcx\n\tmov $0x2222, %%r11\n\tmov $0x3333, %%r8\n\t"
        "movsd %[xin], %%xmm0\n"
        "1:\n\tdec %[n]\n\tjnz 1b\n\t"
        "mov %%rcx, %[rc]\n\tmov %%r11, %[r11]\n\tmov %%r8, %[r8]\n\tmovsd %%xmm0, %[xo]\n"
        : [n] "+r"(loops), [rc] "=m"(rcx_out), [r11] "=m"(r11_out), [r8] "=m"(r8_out),
          [xo] "=m"(x_out)
        : [xin] "m"(x_in)
        : "rcx", "r11", "r8", "xmm0", "cc");
    return rcx_out == 0x1111 && r11_out == 0x2222 && r8_out == 0x3333 && x_out == 2.5;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa = {0};
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    if (sigaltstack(&ss, NULL)) { perror("sigaltstack"); return 1; }
    sa.sa_sigaction = info_handler; sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    double x = 1.25; volatile double y = x * 3;
    raise(SIGUSR1);
    printf("siginfo %d altstack %d fpu %d\n", info_ok, on_alt, y == 3.75 && x == 1.25);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = nodefer_handler; sa.sa_flags = SA_NODEFER;
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);
    printf("nodefer depth %d\n", max_depth);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = masked_handler; sigemptyset(&sa.sa_mask); sigaddset(&sa.sa_mask, SIGINT);
    sigaction(SIGHUP, &sa, NULL);
    raise(SIGHUP);
    sigset_t cur; sigprocmask(SIG_BLOCK, NULL, &cur);
    printf("handler mask %d restored %d\n", nodefer_seen, !sigismember(&cur, SIGHUP));

    sigset_t block; sigemptyset(&block); sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, NULL);
    info_ok = -1; raise(SIGUSR1);
    sigset_t pend; sigpending(&pend);
    printf("blocked pending %d ran %d\n", sigismember(&pend, SIGUSR1), info_ok != -1);
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    printf("unblocked ran %d\n", info_ok == 1);

    memset(&sa, 0, sizeof sa); sa.sa_handler = alarm_handler;  /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_value = {0, 100000}};
    setitimer(ITIMER_REAL, &it, NULL);
    struct timespec req = {5, 0}, rem = {0, 0};
    int r = nanosleep(&req, &rem);
    printf("nanosleep %d EINTR %d rem %d alarms %d\n", r, errno == EINTR,
           rem.tv_sec >= 4, alarms);
    alarm(1);
    volatile unsigned long spin = 0;
    while (alarms < 2) spin++;
    printf("spun alarms %d\n", alarms);
    memset(&sa, 0, sizeof sa); sa.sa_handler = clobber_handler;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval fast = {.it_interval = {0, 5000}, .it_value = {0, 5000}};
    int before = alarms;
    setitimer(ITIMER_REAL, &fast, NULL);
    int ok = 1;
    while (alarms < before + 20) ok &= registers_survive(2000000);
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("registers survive %d\n", ok);
    sa.sa_handler = alarm_handler; sigaction(SIGALRM, &sa, NULL);
    sigset_t none; sigemptyset(&none);
    alarm(1);
    r = sigsuspend(&none);
    printf("sigsuspend %d EINTR %d\n", r, errno == EINTR);
    signal(SIGALRM, SIG_DFL);
    alarm(1);
    pause();
    printf("not reached\n");
    return 0;
}
