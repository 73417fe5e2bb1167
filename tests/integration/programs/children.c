/* A static program run as a child of a USF (tests/integration/test_children.py).
 *   children hello ARGS...  prints its argument count, exits 7
 *   children upper          copies stdin to stdout in upper case
 *   children vfork          vfork children that make a call other than set-up, or
 *                           execve with hostile arguments: the errno each got
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int in_vfork_child(int what) {
    pid_t pid = vfork();
    if (pid == 0) {
        char buf[64];
        char *bad_argv[] = {"x", (char *)-1L, 0};
        char *argv[] = {"x", 0};
        long r = 0;
        switch (what) {
        case 0: r = getcwd(buf, sizeof buf) ? 0 : -1; break;
        case 1: r = syscall(SYS_execve, 0, argv, 0); break;
        case 2: r = syscall(SYS_execve, (char *)1, argv, 0); break;
        case 3: r = syscall(SYS_execve, "/tmp", (char **)8, 0); break;
        case 4: r = syscall(SYS_execve, "/proc/self/exe", bad_argv, 0); break;
        case 5: r = syscall(SYS_execve, "/nonexistent", argv, 0); break;
        case 6: r = syscall(SYS_execve, "/etc/passwd", argv, 0); break;
        case 7: r = syscall(SYS_execve, "/proc/self/exe", argv, (char **)-1L); break;
        }
        _exit(r ? errno : 0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -errno;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "hello")) {
        printf("hello from C with %d args\n", argc);
        return 7;
    }
    if (argc > 1 && !strcmp(argv[1], "upper")) {
        int c;
        while ((c = getchar()) != EOF)
            putchar(toupper(c));
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "vfork")) {
        for (int i = 0; i < 8; i++)
            printf("%d ", in_vfork_child(i));
        printf("\n");
        return 0;
    }
    return 2;
}
