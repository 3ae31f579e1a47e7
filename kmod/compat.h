/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers that hide the differences between the kernels dm-envcrypt
 * supports (Linux 6.1 and 6.12), so the I/O path has no #ifdefs.
 */
#ifndef DM_ENVCRYPT_COMPAT_H
#define DM_ENVCRYPT_COMPAT_H

#include <linux/interrupt.h>
#include <linux/workqueue.h>
#include <crypto/skcipher.h>

/*
 * The features below are detected by Kbuild from the kernel's headers.
 *
 * Linux 6.3 changed the crypto completion callback from taking the request
 * to taking its data pointer.  ENVCRYPT_CRYPTO_DONE(name, fn) defines a
 * callback called name that passes the data pointer on to fn(data, err).
 */
#ifndef ENVCRYPT_COMPLETION_TAKES_DATA
#define ENVCRYPT_CRYPTO_DONE(name, fn)					\
	static void name(struct crypto_async_request *areq, int err)	\
	{								\
		fn(areq->data, err);					\
	}
#else
#define ENVCRYPT_CRYPTO_DONE(name, fn)					\
	static void name(void *data, int err)				\
	{								\
		fn(data, err);						\
	}
#endif

/*
 * struct envcrypt_bh: a per-CPU callback that runs in softirq context as
 * soon as the hard interrupt that scheduled it returns.  Linux 6.9+ has
 * softirq ("BH") workqueues; older kernels use a tasklet.  Either lives in
 * the target's per-CPU data, never in an I/O: the tasklet core touches the
 * tasklet after its callback returns, when that I/O may be gone.
 *
 *   envcrypt_bh_init(bh, fn)   fn(bh) runs on each schedule (at least once)
 *   envcrypt_bh_schedule(bh)   from any context, on the current CPU
 *   envcrypt_bh_kill(bh)       waits until no callback runs (process context)
 */
struct envcrypt_bh;
typedef void (*envcrypt_bh_fn)(struct envcrypt_bh *bh);

#ifdef ENVCRYPT_HAVE_BH_WQ
struct envcrypt_bh {
	struct work_struct work;
	envcrypt_bh_fn fn;
};

static inline void envcrypt_bh_run(struct work_struct *work)
{
	struct envcrypt_bh *bh = container_of(work, struct envcrypt_bh, work);

	bh->fn(bh);
}

static inline void envcrypt_bh_init(struct envcrypt_bh *bh, envcrypt_bh_fn fn)
{
	INIT_WORK(&bh->work, envcrypt_bh_run);
	bh->fn = fn;
}

static inline void envcrypt_bh_schedule(struct envcrypt_bh *bh)
{
	queue_work(system_bh_wq, &bh->work);
}

static inline void envcrypt_bh_kill(struct envcrypt_bh *bh)
{
	cancel_work_sync(&bh->work);
}
#else
struct envcrypt_bh {
	struct tasklet_struct tasklet;
	envcrypt_bh_fn fn;
};

static inline void envcrypt_bh_run(struct tasklet_struct *t)
{
	struct envcrypt_bh *bh = from_tasklet(bh, t, tasklet);

	bh->fn(bh);
}

static inline void envcrypt_bh_init(struct envcrypt_bh *bh, envcrypt_bh_fn fn)
{
	tasklet_setup(&bh->tasklet, envcrypt_bh_run);
	bh->fn = fn;
}

static inline void envcrypt_bh_schedule(struct envcrypt_bh *bh)
{
	tasklet_schedule(&bh->tasklet);
}

static inline void envcrypt_bh_kill(struct envcrypt_bh *bh)
{
	tasklet_kill(&bh->tasklet);
}
#endif

#endif /* DM_ENVCRYPT_COMPAT_H */
