// SPDX-License-Identifier: GPL-2.0
/*
 * envcrypt_delay: a TEST-ONLY race-window widener for the dm-envcrypt guest
 * tests.  Never installed.
 *
 * The target's key races (a "key wipe" slipping in between a successful
 * preresume and the device going live, two "key set"s freeing the same
 * description, a status printing a freed one) are windows of a few
 * instructions: loops of real messages do not hit them.  This module holds
 * one of them open.  It puts a kretprobe on @symbol and, when the function
 * returns in a task named @comm (and, if @caller is set, when it was called
 * from code whose symbol ends in "[@caller]", i.e. from that module), busy
 * waits @delay_ms before letting the caller go on.  The window then lasts
 * that long, whatever the code under test does or does not lock, and the
 * same test runs unchanged against an old build of the target.
 *
 * The wait is a busy wait in the probe's atomic context (a kretprobe
 * handler cannot sleep): fine for a test guest, never for a real system.
 *
 * Parameters (at load): symbol, delay_ms (at most 5000), comm (default
 * "dmsetup"), caller (a module name, default: any caller).
 * /sys/module/envcrypt_delay/parameters/hits (read-only): how many returns
 * were delayed.
 */

#include <linux/module.h>
#include <linux/delay.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/sched.h>
#include <linux/string.h>

#define DELAY_MAX_MS	5000

static char *symbol;
module_param(symbol, charp, 0444);
MODULE_PARM_DESC(symbol, "function whose return is delayed");

static unsigned int delay_ms = 500;
module_param(delay_ms, uint, 0444);
MODULE_PARM_DESC(delay_ms, "busy wait on each matching return, in ms");

static char *comm = "dmsetup";
module_param(comm, charp, 0444);
MODULE_PARM_DESC(comm, "only returns in tasks of this name");

static char *caller;
module_param(caller, charp, 0444);
MODULE_PARM_DESC(caller, "only calls made from this module");

static atomic_t delay_hits;

static int delay_hits_get(char *buffer, const struct kernel_param *kp)
{
	return sysfs_emit(buffer, "%d\n", atomic_read(&delay_hits));
}

static const struct kernel_param_ops delay_hits_ops = {
	.get = delay_hits_get,
};

module_param_cb(hits, &delay_hits_ops, NULL, 0444);
MODULE_PARM_DESC(hits, "returns delayed so far");

/* "[name]" at the end of a symbol: the code belongs to module @name. */
static bool delay_called_from(unsigned long ret_addr)
{
	char sym[KSYM_SYMBOL_LEN];
	size_t sym_len, name_len = strlen(caller);

	sprint_symbol(sym, ret_addr);
	sym_len = strlen(sym);
	return sym_len >= name_len + 2 && sym[sym_len - 1] == ']' &&
	       sym[sym_len - name_len - 2] == '[' &&
	       !strncmp(sym + sym_len - name_len - 1, caller, name_len);
}

/*
 * At entry: arm the return handler only for the calls under test.  It runs
 * on every call of @symbol (kfree, say) in the whole system, so the cheap
 * test comes first.
 */
static int delay_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	if (!in_task() || strcmp(current->comm, comm))
		return 1;
	/* On x86-64 the return address is on top of the stack at entry. */
	if (caller && *caller &&
	    !delay_called_from(*(unsigned long *)kernel_stack_pointer(regs)))
		return 1;
	return 0;
}

static int delay_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	atomic_inc(&delay_hits);
	mdelay(delay_ms);
	return 0;
}

static struct kretprobe delay_probe = {
	.entry_handler = delay_entry,
	.handler = delay_return,
	.maxactive = 16,
};

static int __init delay_init(void)
{
	int r;

	if (!symbol || !*symbol || delay_ms > DELAY_MAX_MS || !comm) {
		pr_err("envcrypt_delay: need symbol= and delay_ms <= %d\n",
		       DELAY_MAX_MS);
		return -EINVAL;
	}
	delay_probe.kp.symbol_name = symbol;
	r = register_kretprobe(&delay_probe);
	if (r)
		pr_err("envcrypt_delay: cannot probe %s: %d\n", symbol, r);
	return r;
}

static void __exit delay_exit(void)
{
	unregister_kretprobe(&delay_probe);
}

module_init(delay_init);
module_exit(delay_exit);

MODULE_DESCRIPTION("Test-only race-window widener for the dm-envcrypt selftests");
MODULE_LICENSE("GPL");
