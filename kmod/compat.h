/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers that hide the differences between the kernels dm-envcrypt
 * supports (Linux 6.1 and 6.12), so the I/O path has no #ifdefs.
 */
#ifndef DM_ENVCRYPT_COMPAT_H
#define DM_ENVCRYPT_COMPAT_H

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
 * Work that must leave hard interrupt context but should run as soon as
 * possible: Linux 6.9+ has softirq ("BH") workqueues; older kernels get a
 * high-priority bound workqueue of the target's own (tasklets are avoided
 * because the tasklet core touches the tasklet after its callback, which
 * frees the I/O it belongs to).
 */
#ifdef ENVCRYPT_HAVE_BH_WQ
/* True when this kernel needs envcrypt_alloc_bh_wq()'s fallback queue. */
static inline bool envcrypt_needs_bh_wq(void)
{
	return false;
}

static inline struct workqueue_struct *envcrypt_alloc_bh_wq(const char *name)
{
	return NULL;
}

static inline void envcrypt_queue_bh(struct workqueue_struct *fallback,
				     struct work_struct *work)
{
	queue_work(system_bh_wq, work);
}
#else
static inline bool envcrypt_needs_bh_wq(void)
{
	return true;
}

static inline struct workqueue_struct *envcrypt_alloc_bh_wq(const char *name)
{
	return alloc_workqueue("%s", WQ_HIGHPRI | WQ_MEM_RECLAIM, 0, name);
}

static inline void envcrypt_queue_bh(struct workqueue_struct *fallback,
				     struct work_struct *work)
{
	queue_work(fallback, work);
}
#endif

#endif /* DM_ENVCRYPT_COMPAT_H */
