// SPDX-License-Identifier: GPL-2.0
/*
 * xtsbench: measures the kernel's own AES-256-XTS speed for one data unit on
 * one CPU, for the envcrypt benchmark's crypto-only limit and latency floor.
 * It encrypts a page-aligned buffer unit by unit with the same "xts(aes)"
 * transform dm-envcrypt and dm-crypt allocate, prints the result and stays
 * loaded until removed.  With all_cpus=1 it then runs the same loop on every
 * online CPU at once and prints their sum: what the CPUs deliver together,
 * which under emulation can be less than one CPU's rate times their number.
 *
 *   insmod xtsbench.ko unit=4096 millis=2000 all_cpus=1
 *   dmesg | grep xtsbench:
 */

#include <linux/module.h>
#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/random.h>
#include <linux/scatterlist.h>
#include <crypto/skcipher.h>

static unsigned int unit = 4096;
module_param(unit, uint, 0444);
MODULE_PARM_DESC(unit, "data unit in bytes (512..4096)");

static unsigned int millis = 2000;
module_param(millis, uint, 0444);
MODULE_PARM_DESC(millis, "how long to measure, in milliseconds");

static char *cipher = "xts(aes)";
module_param(cipher, charp, 0444);
MODULE_PARM_DESC(cipher, "crypto API algorithm name");

static bool all_cpus;
module_param(all_cpus, bool, 0444);
MODULE_PARM_DESC(all_cpus, "also measure every online CPU at once");

/* One measuring loop: how many units in how many nanoseconds. */
struct xtsbench_result {
	struct crypto_skcipher *tfm;
	struct completion *start;	/* all_cpus: wait for the others */
	struct completion done;
	u64 units;
	u64 ns;
	int error;
};

static u64 xtsbench_mb_per_s(u64 units, u64 ns)
{
	return ns ? div64_u64((u64)unit * units * 1000, ns) : 0;
}

static int xtsbench_loop(struct xtsbench_result *res, struct page *page)
{
	struct skcipher_request *req;
	struct scatterlist sg;
	DECLARE_CRYPTO_WAIT(wait);
	u64 start, elapsed;
	__le64 iv[2] = {0, 0};
	int r = 0;

	req = skcipher_request_alloc(res->tfm, GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	sg_init_table(&sg, 1);
	sg_set_page(&sg, page, unit, 0);
	skcipher_request_set_callback(req, CRYPTO_TFM_REQ_MAY_BACKLOG,
				      crypto_req_done, &wait);
	skcipher_request_set_crypt(req, &sg, &sg, unit, iv);

	res->units = 0;
	start = ktime_get_ns();
	do {
		iv[0] = cpu_to_le64(res->units);
		r = crypto_wait_req(crypto_skcipher_encrypt(req), &wait);
		res->units++;
		elapsed = ktime_get_ns() - start;
	} while (!r && elapsed < (u64)millis * NSEC_PER_MSEC);
	res->ns = elapsed;
	skcipher_request_free(req);
	return r;
}

static int xtsbench_run(struct crypto_skcipher *tfm, struct page *page)
{
	struct xtsbench_result res = { .tfm = tfm };
	int r = xtsbench_loop(&res, page);

	if (!r)
		pr_info("xtsbench: driver=%s unit=%u units=%llu ns=%llu ns_per_unit=%llu mb_per_s=%llu\n",
			crypto_skcipher_driver_name(tfm), unit, res.units,
			res.ns, div64_u64(res.ns, res.units),
			xtsbench_mb_per_s(res.units, res.ns));
	return r;
}

static int xtsbench_thread(void *data)
{
	struct xtsbench_result *res = data;
	struct page *page = alloc_page(GFP_KERNEL);

	wait_for_completion(res->start);
	res->error = page ? xtsbench_loop(res, page) : -ENOMEM;
	if (page)
		__free_page(page);
	/* Signal and exit in one step: no module code runs after the signal. */
	kthread_complete_and_exit(&res->done, 0);
}

/* Starts one loop per online CPU, lets them go together, sums the rates. */
static int xtsbench_run_all_cpus(struct crypto_skcipher *tfm)
{
	DECLARE_COMPLETION_ONSTACK(start);
	struct xtsbench_result *res;
	unsigned int cpu, started = 0;
	u64 total = 0;
	int r = 0;

	res = kcalloc(nr_cpu_ids, sizeof(*res), GFP_KERNEL);
	if (!res)
		return -ENOMEM;
	for_each_online_cpu(cpu) {
		struct task_struct *task;

		res[cpu].tfm = tfm;
		res[cpu].start = &start;
		init_completion(&res[cpu].done);
		task = kthread_run_on_cpu(xtsbench_thread, &res[cpu], cpu,
					  "xtsbench/%u");
		if (IS_ERR(task)) {
			r = PTR_ERR(task);
			res[cpu].tfm = NULL;
			break;
		}
		started++;
	}
	complete_all(&start);
	for_each_online_cpu(cpu) {
		if (!res[cpu].tfm)
			break;
		wait_for_completion(&res[cpu].done);
		if (res[cpu].error && !r)
			r = res[cpu].error;
		total += xtsbench_mb_per_s(res[cpu].units, res[cpu].ns);
	}
	if (!r)
		pr_info("xtsbench: all_cpus=%u driver=%s unit=%u mb_per_s=%llu\n",
			started, crypto_skcipher_driver_name(tfm), unit, total);
	kfree(res);
	return r;
}

static int __init xtsbench_init(void)
{
	struct crypto_skcipher *tfm;
	struct page *page;
	u8 key[64];
	int r;

	if (unit < 512 || unit > PAGE_SIZE || unit % 16)
		return -EINVAL;
	tfm = crypto_alloc_skcipher(cipher, 0, 0);
	if (IS_ERR(tfm))
		return PTR_ERR(tfm);
	page = alloc_page(GFP_KERNEL);
	if (!page) {
		r = -ENOMEM;
		goto free_tfm;
	}
	get_random_bytes(key, sizeof(key));
	r = crypto_skcipher_setkey(tfm, key, sizeof(key));
	memzero_explicit(key, sizeof(key));
	if (!r)
		r = xtsbench_run(tfm, page);
	if (!r && all_cpus)
		r = xtsbench_run_all_cpus(tfm);
	__free_page(page);
free_tfm:
	crypto_free_skcipher(tfm);
	return r;
}

static void __exit xtsbench_exit(void)
{
}

module_init(xtsbench_init);
module_exit(xtsbench_exit);

MODULE_DESCRIPTION("AES-XTS single-CPU speed probe for the envcrypt benchmark");
MODULE_LICENSE("GPL");
