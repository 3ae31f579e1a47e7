// SPDX-License-Identifier: GPL-2.0
/*
 * xtsbench: measures the kernel's own AES-256-XTS speed for one data unit on
 * one CPU, for the envcrypt benchmark's crypto-only limit and latency floor.
 * It encrypts a page-aligned buffer unit by unit with the same "xts(aes)"
 * transform dm-envcrypt and dm-crypt allocate, prints the result and stays
 * loaded until removed.
 *
 *   insmod xtsbench.ko unit=4096 millis=2000
 *   dmesg | grep xtsbench:
 */

#include <linux/module.h>
#include <linux/ktime.h>
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

static int xtsbench_run(struct crypto_skcipher *tfm, struct page *page)
{
	struct skcipher_request *req;
	struct scatterlist sg;
	DECLARE_CRYPTO_WAIT(wait);
	u64 units = 0, start, elapsed;
	__le64 iv[2] = {0, 0};
	int r = 0;

	req = skcipher_request_alloc(tfm, GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	sg_init_table(&sg, 1);
	sg_set_page(&sg, page, unit, 0);
	skcipher_request_set_callback(req, CRYPTO_TFM_REQ_MAY_BACKLOG,
				      crypto_req_done, &wait);
	skcipher_request_set_crypt(req, &sg, &sg, unit, iv);

	start = ktime_get_ns();
	do {
		iv[0] = cpu_to_le64(units);
		r = crypto_wait_req(crypto_skcipher_encrypt(req), &wait);
		units++;
		elapsed = ktime_get_ns() - start;
	} while (!r && elapsed < (u64)millis * NSEC_PER_MSEC);

	if (!r)
		pr_info("xtsbench: driver=%s unit=%u units=%llu ns=%llu ns_per_unit=%llu mb_per_s=%llu\n",
			crypto_skcipher_driver_name(tfm), unit, units, elapsed,
			div64_u64(elapsed, units),
			div64_u64((u64)unit * units * 1000, elapsed));
	skcipher_request_free(req);
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
