/* The pod sandbox's process for the end-to-end suite's containerd: it holds
 * the pod's namespaces and does nothing until it is told to stop. Built
 * static by scripts/e2e.sh and wrapped in a FROM scratch image named as
 * kubeadm names the pause image, since no registry is reachable here. */
#include <signal.h>
#include <unistd.h>

static void stop(int sig)
{
    (void)sig;
    _exit(0);
}

int main(void)
{
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;)
        pause();
}
