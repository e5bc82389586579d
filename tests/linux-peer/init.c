// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * peer-init: the whole userspace of baton's Linux KHO peer (built with the kernel tree's
 * nolibc by scripts/linux-peer.sh, static, no libc).
 *
 * If the initramfs holds /kernel, load it with kexec_file_load (initrd /next.initrd when
 * present, command line /next.cmdline when present, else this kernel's own) and reboot into
 * it: by then test_kho has preserved its folios, so this is one KHO handover. Without
 * /kernel it powers the machine off (the last kernel of a chain). Every step prints one line.
 */
#include <linux/kexec.h>

#define CMDLINE_MAX 2048

static void say(const char *s)
{
	write(1, "peer-init: ", 11);
	write(1, s, strlen(s));
	write(1, "\n", 1);
}

static void say_err(const char *what)
{
	char num[16];
	int e = errno, i = sizeof(num) - 1;

	num[i] = 0;
	do {
		num[--i] = '0' + e % 10;
		e /= 10;
	} while (e && i > 0);
	write(1, "peer-init: ", 11);
	write(1, what, strlen(what));
	write(1, " failed, errno ", 15);
	write(1, num + i, strlen(num + i));
	write(1, "\n", 1);
}

/* Reads up to len-1 bytes of path into buf, stops at the first newline; -1 if missing. */
static long read_line(const char *path, char *buf, long len)
{
	long n, i;
	int fd = open(path, O_RDONLY, 0);

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++)
		if (buf[i] == '\n')
			break;
	buf[i] = 0;
	return i;
}

static void halt(void)
{
	reboot(RB_POWER_OFF);
	for (;;)
		sleep(1);
}

int main(void)
{
	static char cmdline[CMDLINE_MAX];
	unsigned long flags = 0;
	long len;
	int kernel_fd, initrd_fd;

	kernel_fd = open("/kernel", O_RDONLY, 0);
	if (kernel_fd < 0) {
		say("no /kernel in the initramfs: end of the chain, powering off");
		halt();
	}
	len = read_line("/next.cmdline", cmdline, sizeof(cmdline));
	if (len < 0) {
		mkdir("/proc", 0755);
		if (mount("proc", "/proc", "proc", 0, NULL) < 0)
			say_err("mount /proc");
		len = read_line("/proc/cmdline", cmdline, sizeof(cmdline));
		if (len < 0) {
			say_err("read /proc/cmdline");
			len = 0;
			cmdline[0] = 0;
		}
	}
	initrd_fd = open("/next.initrd", O_RDONLY, 0);
	if (initrd_fd < 0)
		flags |= KEXEC_FILE_NO_INITRAMFS;
	say(initrd_fd < 0 ? "kexec_file_load /kernel (no initrd)"
			  : "kexec_file_load /kernel with /next.initrd");
	say(cmdline);
	if (syscall(__NR_kexec_file_load, kernel_fd, initrd_fd, len + 1, cmdline, flags) < 0) {
		say_err("kexec_file_load");
		halt();
	}
	say("reboot(RB_KEXEC)");
	reboot(RB_KEXEC);
	say_err("reboot(RB_KEXEC)");
	halt();
	return 0;
}
