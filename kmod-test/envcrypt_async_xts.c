// SPDX-License-Identifier: GPL-2.0
/*
 * envcrypt_async_xts: a TEST-ONLY "xts(aes)" driver with the shape of a
 * hardware accelerator, for the dm-envcrypt guest tests.  Never installed.
 *
 * It registers "xts(aes)" above every real implementation and wraps a
 * synchronous one (the xts template over the best "aes" cipher), so its
 * output is the real AES-XTS.  Requests take turns being answered:
 * synchronously, from a hard-interrupt hrtimer, from a work item with
 * bottom halves disabled (as a driver's tasklet would), or backlogged
 * (-EBUSY, then -EINPROGRESS and the result from a work item) when the
 * caller allows it.  A caller that sleeps in its completion callback shows
 * up as "scheduling while atomic"; one that starts its next request from
 * there, or from a hard interrupt, is counted (see "stats").
 *
 * Parameters: allocates_memory=1 flags the algorithm
 * CRYPTO_ALG_ALLOCATES_MEMORY (at load), which users such as dm-crypt mask
 * out.  /sys/module/envcrypt_async_xts/parameters/stats (read-only):
 *   sync=N hardirq=N bh=N backlog=N nested=N in_hardirq=N
 * nested: requests submitted while one of ours was being completed on the
 * same CPU, i.e. from inside a completion callback; in_hardirq: requests
 * submitted in hard interrupt context.
 */

#include <linux/module.h>
#include <linux/hrtimer.h>
#include <linux/percpu.h>
#include <linux/workqueue.h>
#include <crypto/aes.h>
#include <crypto/internal/skcipher.h>

#define ATEST_DRIVER	"xts-aes-envcrypt-async-test"
/* Above aesni (401) and the VAES/AVX implementations (up to 800). */
#define ATEST_PRIORITY	5000
#define ATEST_DELAY_NS	(20 * NSEC_PER_USEC)

static bool allocates_memory;
module_param(allocates_memory, bool, 0444);
MODULE_PARM_DESC(allocates_memory, "flag the algorithm CRYPTO_ALG_ALLOCATES_MEMORY");

enum {
	ATEST_SYNC,
	ATEST_HARDIRQ,
	ATEST_BH,
	ATEST_BACKLOG,
	ATEST_NESTED,
	ATEST_IN_HARDIRQ,
	ATEST_NR_STATS
};

static atomic_long_t atest_stats[ATEST_NR_STATS];
static atomic_t atest_turn;
/* Non-zero while one of our completions runs on this CPU. */
static DEFINE_PER_CPU(int, atest_completing);
static struct workqueue_struct *atest_wq;

struct atest_tfm_ctx {
	struct crypto_skcipher *child;
};

struct atest_req_ctx {
	struct hrtimer timer;
	struct work_struct work;
	int err;
	bool backlogged;
	struct skcipher_request subreq;	/* last: the child's context follows */
};

/* Hard interrupt or bottom halves off: the CPU cannot change under us. */
static void atest_complete(struct skcipher_request *req, int err)
{
	this_cpu_inc(atest_completing);
	skcipher_request_complete(req, err);
	this_cpu_dec(atest_completing);
}

static enum hrtimer_restart atest_timer_fn(struct hrtimer *timer)
{
	struct atest_req_ctx *rctx = container_of(timer, struct atest_req_ctx,
						  timer);
	struct skcipher_request *req = container_of((void *)rctx,
						    struct skcipher_request,
						    __ctx);

	/* The request may be gone once completed: read nothing after. */
	atest_complete(req, rctx->err);
	return HRTIMER_NORESTART;
}

/*
 * Linux 6.13 added hrtimer_setup(), which also sets the callback, and later
 * kernels removed hrtimer_init(); Kbuild probes the headers for the former.
 */
static void atest_timer_setup(struct hrtimer *timer)
{
#ifdef ATEST_HAVE_HRTIMER_SETUP
	hrtimer_setup(timer, atest_timer_fn, CLOCK_MONOTONIC,
		      HRTIMER_MODE_REL_HARD);
#else
	hrtimer_init(timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_HARD);
	timer->function = atest_timer_fn;
#endif
}

static void atest_work_fn(struct work_struct *work)
{
	struct atest_req_ctx *rctx = container_of(work, struct atest_req_ctx,
						  work);
	struct skcipher_request *req = container_of((void *)rctx,
						    struct skcipher_request,
						    __ctx);
	int err = rctx->err;

	local_bh_disable();
	if (rctx->backlogged)
		atest_complete(req, -EINPROGRESS);
	atest_complete(req, err);
	local_bh_enable();
}

static int atest_crypt(struct skcipher_request *req, bool encrypt)
{
	struct crypto_skcipher *tfm = crypto_skcipher_reqtfm(req);
	struct atest_tfm_ctx *ctx = crypto_skcipher_ctx(tfm);
	struct atest_req_ctx *rctx = skcipher_request_ctx(req);
	struct skcipher_request *subreq = &rctx->subreq;
	unsigned int turn = atomic_inc_return(&atest_turn) % 8;
	int err;

	preempt_disable();
	if (this_cpu_read(atest_completing))
		atomic_long_inc(&atest_stats[ATEST_NESTED]);
	preempt_enable();
	if (in_hardirq())
		atomic_long_inc(&atest_stats[ATEST_IN_HARDIRQ]);

	/* The child is synchronous: the work is done here, only the answer waits. */
	skcipher_request_set_tfm(subreq, ctx->child);
	skcipher_request_set_callback(subreq, 0, NULL, NULL);
	skcipher_request_set_crypt(subreq, req->src, req->dst, req->cryptlen,
				   req->iv);
	err = encrypt ? crypto_skcipher_encrypt(subreq) :
			crypto_skcipher_decrypt(subreq);

	if (turn < 2) {
		atomic_long_inc(&atest_stats[ATEST_SYNC]);
		return err;
	}
	rctx->err = err;
	rctx->backlogged = false;
	if (turn < 5) {
		atomic_long_inc(&atest_stats[ATEST_HARDIRQ]);
		atest_timer_setup(&rctx->timer);
		hrtimer_start(&rctx->timer, ns_to_ktime(ATEST_DELAY_NS),
			      HRTIMER_MODE_REL_HARD);
		return -EINPROGRESS;
	}
	INIT_WORK(&rctx->work, atest_work_fn);
	if (turn == 7 && (req->base.flags & CRYPTO_TFM_REQ_MAY_BACKLOG)) {
		atomic_long_inc(&atest_stats[ATEST_BACKLOG]);
		rctx->backlogged = true;
		queue_work(atest_wq, &rctx->work);
		return -EBUSY;
	}
	atomic_long_inc(&atest_stats[ATEST_BH]);
	queue_work(atest_wq, &rctx->work);
	return -EINPROGRESS;
}

static int atest_encrypt(struct skcipher_request *req)
{
	return atest_crypt(req, true);
}

static int atest_decrypt(struct skcipher_request *req)
{
	return atest_crypt(req, false);
}

static int atest_setkey(struct crypto_skcipher *tfm, const u8 *key,
			unsigned int keylen)
{
	struct atest_tfm_ctx *ctx = crypto_skcipher_ctx(tfm);

	crypto_skcipher_clear_flags(ctx->child, CRYPTO_TFM_REQ_MASK);
	crypto_skcipher_set_flags(ctx->child, crypto_skcipher_get_flags(tfm) &
					      CRYPTO_TFM_REQ_MASK);
	return crypto_skcipher_setkey(ctx->child, key, keylen);
}

static int atest_init_tfm(struct crypto_skcipher *tfm)
{
	struct atest_tfm_ctx *ctx = crypto_skcipher_ctx(tfm);
	struct crypto_skcipher *child;

	/* Masking ASYNC keeps us (and every SIMD wrapper) out. */
	child = crypto_alloc_skcipher("xts(aes)", 0, CRYPTO_ALG_ASYNC);
	if (IS_ERR(child))
		return PTR_ERR(child);
	ctx->child = child;
	crypto_skcipher_set_reqsize(tfm, sizeof(struct atest_req_ctx) +
					 crypto_skcipher_reqsize(child));
	return 0;
}

static void atest_exit_tfm(struct crypto_skcipher *tfm)
{
	struct atest_tfm_ctx *ctx = crypto_skcipher_ctx(tfm);

	crypto_free_skcipher(ctx->child);
}

static struct skcipher_alg atest_alg = {
	.base.cra_name		= "xts(aes)",
	.base.cra_driver_name	= ATEST_DRIVER,
	.base.cra_priority	= ATEST_PRIORITY,
	.base.cra_flags		= CRYPTO_ALG_ASYNC,
	.base.cra_blocksize	= AES_BLOCK_SIZE,
	.base.cra_ctxsize	= sizeof(struct atest_tfm_ctx),
	.base.cra_module	= THIS_MODULE,
	.min_keysize		= 2 * AES_MIN_KEY_SIZE,
	.max_keysize		= 2 * AES_MAX_KEY_SIZE,
	.ivsize			= AES_BLOCK_SIZE,
	.walksize		= 2 * AES_BLOCK_SIZE,
	.setkey			= atest_setkey,
	.encrypt		= atest_encrypt,
	.decrypt		= atest_decrypt,
	.init			= atest_init_tfm,
	.exit			= atest_exit_tfm,
};

static int atest_get_stats(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf,
			  "sync=%ld hardirq=%ld bh=%ld backlog=%ld nested=%ld in_hardirq=%ld\n",
			  atomic_long_read(&atest_stats[ATEST_SYNC]),
			  atomic_long_read(&atest_stats[ATEST_HARDIRQ]),
			  atomic_long_read(&atest_stats[ATEST_BH]),
			  atomic_long_read(&atest_stats[ATEST_BACKLOG]),
			  atomic_long_read(&atest_stats[ATEST_NESTED]),
			  atomic_long_read(&atest_stats[ATEST_IN_HARDIRQ]));
}

static const struct kernel_param_ops atest_stats_ops = {
	.get = atest_get_stats,
};
module_param_cb(stats, &atest_stats_ops, NULL, 0444);
MODULE_PARM_DESC(stats, "completion and misuse counters");

static int __init atest_init(void)
{
	int r;

	atest_wq = alloc_workqueue("envcrypt_async_xts", WQ_MEM_RECLAIM, 0);
	if (!atest_wq)
		return -ENOMEM;
	if (allocates_memory)
		atest_alg.base.cra_flags |= CRYPTO_ALG_ALLOCATES_MEMORY;
	r = crypto_register_skcipher(&atest_alg);
	if (r)
		destroy_workqueue(atest_wq);
	return r;
}

static void __exit atest_exit(void)
{
	crypto_unregister_skcipher(&atest_alg);
	destroy_workqueue(atest_wq);
}

module_init(atest_init);
module_exit(atest_exit);

MODULE_DESCRIPTION("Test-only asynchronous xts(aes) for the dm-envcrypt selftests");
MODULE_LICENSE("GPL");
