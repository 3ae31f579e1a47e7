// SPDX-License-Identifier: GPL-2.0
/*
 * dm-envcrypt: transparent AES-256-XTS encryption of a block device whose
 * data key is handed over by envcryptctl as a "logon" key.
 *
 * Table: <dev> <dev_offset> logon:<desc> [<#opt> sector_size:<n> allow_discards]
 *
 * The ciphertext is byte-identical to dm-crypt's aes-xts-plain64 with the
 * same sector size: the IV of each data unit is the little-endian number of
 * its first 512-byte sector, counted from the start of the target.
 *
 * I/O path: reads are decrypted in place in the caller's pages when the
 * lower device completes them; writes are encrypted into bounce pages from
 * a mempool, and finished writes' pages are kept for the next ones.  A
 * small I/O that finds no other I/O of the device in flight is processed
 * where it is (the submitting task for writes, the completing
 * context for reads, or a softirq right after a hard interrupt), so a QD1
 * request pays no thread hand-off.  Large I/O, and any I/O while others
 * are in flight, goes to the target's queue, drained by one worker per
 * online CPU on an unbound workqueue so that every CPU shares the crypto.
 * A worker takes one I/O after another until the queue is empty, under a
 * block plug: the writes it encrypts reach the lower device in batches (one
 * doorbell for several requests) and a busy device costs no thread
 * hand-off per I/O.  A lone I/O is still handed off now and then (a probe):
 * on devices that complete synchronously (brd), that is the only way to
 * discover that the submitter had more I/O queued behind it.  Probes that
 * find nothing space themselves out, so true QD1 rarely pays for one.
 *
 * When the FPU is usable the cipher is called synchronously (the fast
 * path, see envcrypt_alloc_sync_cipher()); otherwise through "xts(aes)",
 * which may be asynchronous: a request answered with -EINPROGRESS/-EBUSY
 * goes back to the workers when it completes, and the rest of the I/O
 * (further units, submitting the write, completing the bio) runs there, in
 * process context: the completion may come from a hard interrupt, where
 * none of that may run.  Drivers that
 * allocate memory per request are never chosen (they fail under the memory
 * pressure that swapping to the device means).  Bounce memory is capped
 * per device (ENVCRYPT_BOUNCE_*) and shown by STATUS.
 *
 * Polled I/O (io_uring with hipri): reads are remapped, so dm core polls
 * the lower device for them; the ciphertext bio of a write is never polled
 * (nobody would reap it) and completes by interrupt while dm core polls.
 *
 * Key messages, preresume, postsuspend and status are serialised by
 * key_lock; the target keeps its own idea of being suspended, so that a
 * "key wipe" cannot slip in between a successful preresume and the moment
 * dm core marks the device live.
 */

#include <linux/module.h>
#include <linux/init.h>
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/ctype.h>
#include <linux/device-mapper.h>
#include <linux/key.h>
#include <linux/key-type.h>
#include <linux/list.h>
#include <linux/llist.h>
#include <linux/mempool.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/random.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/workqueue.h>
#include <asm/simd.h>
#include <crypto/internal/simd.h>
#include <crypto/skcipher.h>
#include <keys/user-type.h>

#include "compat.h"

#define DM_MSG_PREFIX "envcrypt"

#define ENVCRYPT_KEY_SIZE	64	/* AES-256-XTS: K1 || K2 */
#define ENVCRYPT_KEY_PREFIX	"logon:"
#define ENVCRYPT_CIPHER		"xts(aes)"
#define ENVCRYPT_SYNC_CIPHER	"__xts(aes)"
#define ENVCRYPT_IV_SIZE	16
/* Bios up to this size may be encrypted/decrypted where they are. */
#define ENVCRYPT_INLINE_BYTES	(16 * 1024)
/*
 * A lone small I/O is still handed off once in so many (a power of 2
 * between these bounds), so that a submitter with more queued finds one in
 * flight and spreads out.  Each probe doubles the interval and any overlap
 * resets it: at true QD1, where a probe costs a thread hand-off and finds
 * nothing, one I/O in 4096 pays for it instead of one in 64, while a
 * submitter that starts queueing is found within 4096 I/Os at worst (see
 * Documentation/performance.rst).
 */
#define ENVCRYPT_PROBE_MIN	64
#define ENVCRYPT_PROBE_MAX	4096
/*
 * After small I/O of the device was last seen overlapping, it is handed
 * off for this long even when it finds nothing in flight.  On a device
 * that completes in the submitter (brd), the workers drain the queue
 * faster than one submitter fills it, so "nothing in flight" recurs at
 * any queue depth; without the window the submitter would fall back to
 * doing all the crypto itself, on one CPU.  True QD1 never overlaps.
 */
#define ENVCRYPT_BUSY_MSECS	4
/*
 * A worker submits the writes it encrypted at least once per this much
 * I/O processed: batching saves a doorbell per request, but a write held
 * back while large I/O is encrypted would leave the device idle.
 */
#define ENVCRYPT_BATCH_BYTES	(128 * 1024)
/* Writes are cut to this size: one bio's bounce pages fit the mempool. */
#define ENVCRYPT_MAX_WRITE_SECTORS	((BIO_MAX_VECS << PAGE_SHIFT) >> SECTOR_SHIFT)
/*
 * Bounce pages of finished writes are kept for the next ones, up to one
 * largest write's worth: a fresh page costs a clear_page() wherever
 * init_on_alloc is on (Debian's default), and a bounce page is overwritten
 * with ciphertext anyway.  Kept pages unused for ENVCRYPT_STASH_IDLE_MSECS
 * go back to the page allocator.
 */
#define ENVCRYPT_STASH_PAGES		BIO_MAX_VECS
#define ENVCRYPT_STASH_IDLE_MSECS	1000
/*
 * Bounce memory of one device (the mempool's reserve, the stash and the
 * pages of writes in flight) is capped: as dm-crypt, all devices share 2%
 * of RAM (1/ENVCRYPT_BOUNCE_RAM_SHARE), and each gets at least the reserve,
 * a full stash and two largest writes.  Past its cap a device does not ask
 * the page allocator for more; its writers wait for the reserve, which
 * finishing writes refill.  max_bounce_kib overrides the share.
 */
#define ENVCRYPT_BOUNCE_RAM_SHARE	50
#define ENVCRYPT_BOUNCE_MIN_PAGES	(4 * BIO_MAX_VECS)

static unsigned int max_bounce_kib;
module_param(max_bounce_kib, uint, 0644);
MODULE_PARM_DESC(max_bounce_kib,
		 "Bounce memory cap per device in KiB (0: a share of 2% of RAM)");

static atomic_t envcrypt_devices = ATOMIC_INIT(0);

struct envcrypt_stats {
	atomic64_t reads;
	atomic64_t writes;
	atomic64_t read_bytes;
	atomic64_t write_bytes;
	atomic64_t errors;
};

struct envcrypt_ctx;

/* One drainer of the crypt queue; there are as many as online CPUs. */
struct envcrypt_worker {
	struct work_struct work;
	struct envcrypt_ctx *ec;
	struct list_head idle_entry;	/* on ec->idle_workers when idle */
};

/* Reads completed in hard interrupt context on one CPU, for its softirq. */
struct envcrypt_bh_queue {
	struct llist_head ios;
	struct envcrypt_bh bh;
};

struct envcrypt_ctx {
	struct dm_dev *dev;
	sector_t start;			/* data area on dev, 512-byte sectors */
	unsigned int sector_size;	/* data unit: 512 or 4096 bytes */
	unsigned int unit_sectors;	/* sector_size >> SECTOR_SHIFT */
	bool allow_discards;

	/*
	 * key_lock protects key_valid, key_desc, suspended and the keys of
	 * both transforms.  suspended is true from postsuspend to the next
	 * successful preresume (and for a table not yet resumed): key
	 * messages need it, so none can run once a resume is under way.
	 */
	struct mutex key_lock;
	bool key_valid;			/* false after "key wipe" */
	bool suspended;
	char *key_desc;			/* description of the logon key */

	struct crypto_skcipher *tfm;		/* may be asynchronous */
	struct crypto_skcipher *sync_tfm;	/* FPU-only fast path, or NULL */
	unsigned int req_offset;	/* skcipher request in per-bio data */
	atomic_t inflight;		/* data bios between map and completion */
	atomic_t probe;			/* counts lone small I/O */
	unsigned int probe_every;	/* probe interval, power of 2 */
	unsigned long busy_until;	/* jiffies: hand off until then */

	struct bio_set bs;		/* write clones */
	mempool_t page_pool;		/* write bounce pages */
	spinlock_t stash_lock;		/* protects the stash; taken in hardirq */
	struct list_head stash;		/* kept bounce pages, through page->lru */
	unsigned int stash_nr;
	unsigned long stash_used;	/* jiffies of the last take */
	struct delayed_work stash_trim;
	struct mutex bounce_lock;	/* one blocking page allocator at a time */
	bool bounce_waiting;		/* under stash_lock: a writer sleeps */
	atomic_long_t bounce_pages;	/* pages held, see ENVCRYPT_BOUNCE_* */
	struct workqueue_struct *crypt_wq;	/* runs the workers, any CPU */
	struct envcrypt_bh_queue __percpu *bh_queues;
	spinlock_t queue_lock;		/* protects queue; taken in hardirq */
	struct list_head queue;		/* I/O waiting for a worker, FIFO */
	struct list_head idle_workers;	/* workers that may be woken */
	struct envcrypt_worker *workers;
	unsigned int nr_workers;

	struct envcrypt_stats stats;
};

/* Per-bio state, in the bio's dm per-bio data, followed by the request. */
struct envcrypt_io {
	struct envcrypt_ctx *ec;
	struct bio *bio;		/* the bio dm handed to map */
	struct bio *clone;		/* writes: the ciphertext bio */
	struct bvec_iter iter_in;	/* next unit to read from */
	struct bvec_iter iter_out;	/* next unit to write to */
	sector_t unit_sector;		/* IV of the next unit */
	unsigned int bytes;		/* size of the whole I/O */
	blk_status_t status;
	int crypt_err;			/* of the last asynchronous request */
	bool continuing;		/* queued after an async completion */
	bool readahead_declined;	/* reads: readahead failed below */
	bio_end_io_t *orig_end_io;	/* reads: dm's completion */
	struct list_head queue_entry;	/* on ec->queue */
	struct llist_node bh_entry;	/* on a bh_queue */
	struct scatterlist sg_in;
	struct scatterlist sg_out;
	__le64 iv[ENVCRYPT_IV_SIZE / sizeof(__le64)];
};

static struct skcipher_request *envcrypt_req(struct envcrypt_io *io)
{
	return (struct skcipher_request *)((char *)io + io->ec->req_offset);
}

static bool envcrypt_is_write(struct envcrypt_io *io)
{
	return bio_data_dir(io->bio) == WRITE;
}

/* Crypto may run here unless this is a hard interrupt (no FPU/BH there). */
static bool envcrypt_context_allows_crypto(void)
{
	return !in_hardirq() && !irqs_disabled();
}

/*
 * Opens or extends the busy window (see ENVCRYPT_BUSY_MSECS) and brings
 * probes back to their shortest interval.
 */
static void envcrypt_mark_busy(struct envcrypt_ctx *ec)
{
	/* + 1: a window that starts late in a jiffy still lasts a full one. */
	unsigned long until = jiffies + msecs_to_jiffies(ENVCRYPT_BUSY_MSECS) + 1;

	/* Written once per jiffy, not per I/O: the line is shared by all CPUs. */
	if (READ_ONCE(ec->busy_until) != until)
		WRITE_ONCE(ec->busy_until, until);
	if (READ_ONCE(ec->probe_every) != ENVCRYPT_PROBE_MIN)
		WRITE_ONCE(ec->probe_every, ENVCRYPT_PROBE_MIN);
}

/* Is this lone I/O a probe?  A probe spaces out the next one. */
static bool envcrypt_probe_due(struct envcrypt_ctx *ec)
{
	unsigned int every = READ_ONCE(ec->probe_every);

	if (atomic_inc_return(&ec->probe) & (every - 1))
		return false;
	if (every < ENVCRYPT_PROBE_MAX)
		WRITE_ONCE(ec->probe_every, every * 2);
	return true;
}

/*
 * Should this I/O be processed in the current context?  Yes for a small
 * I/O with no other I/O of the device in flight and no busy window open
 * (the latency case), except for an occasional probe; no otherwise (the
 * throughput case).
 */
static bool envcrypt_process_here(struct envcrypt_io *io)
{
	struct envcrypt_ctx *ec = io->ec;

	if (io->bytes > ENVCRYPT_INLINE_BYTES)
		return false;
	if (atomic_read(&ec->inflight) > 1) {
		envcrypt_mark_busy(ec);
		return false;
	}
	if (time_before(jiffies, READ_ONCE(ec->busy_until)))
		return false;
	return !envcrypt_probe_due(ec);
}

/* Accounts a finished I/O; every data bio passes here exactly once. */
static void envcrypt_count(struct envcrypt_io *io)
{
	struct envcrypt_stats *stats = &io->ec->stats;

	atomic_dec(&io->ec->inflight);
	if (io->status) {
		if (!io->readahead_declined)
			atomic64_inc(&stats->errors);
	} else if (envcrypt_is_write(io)) {
		atomic64_inc(&stats->writes);
		atomic64_add(io->bytes, &stats->write_bytes);
	} else {
		atomic64_inc(&stats->reads);
		atomic64_add(io->bytes, &stats->read_bytes);
	}
}

/*
 * Process data units until the I/O is done (returns 0), fails (returns an
 * error) or the cipher went asynchronous (returns -EINPROGRESS; the
 * completion callback continues).  @may_sleep: the caller is a worker,
 * which yields between units.
 */
static int envcrypt_crypt_units(struct envcrypt_io *io, bool may_sleep);

static void envcrypt_read_done(struct envcrypt_io *io);
static void envcrypt_write_encrypted(struct envcrypt_io *io);
static void envcrypt_queue_io(struct envcrypt_io *io);

static void envcrypt_crypt_finished(struct envcrypt_io *io, int err)
{
	if (err && !io->status) {
		DMERR_LIMIT("%s failed at sector %llu: %d",
			    envcrypt_is_write(io) ? "encryption" : "decryption",
			    (unsigned long long)io->unit_sector, err);
		io->status = errno_to_blk_status(err);
	}
	if (envcrypt_is_write(io))
		envcrypt_write_encrypted(io);
	else
		envcrypt_read_done(io);
}

/*
 * The completion callback of an asynchronous request: any context, hard
 * interrupts included.  Nothing here may sleep, submit or complete a bio,
 * or start the next request (a driver may call back from inside its own
 * submission path): the rest of the I/O goes to the workers.
 */
static void envcrypt_crypt_resume(void *data, int err)
{
	struct envcrypt_io *io = data;

	/* A backlogged request has started; its completion follows. */
	if (err == -EINPROGRESS)
		return;
	io->crypt_err = err;
	io->continuing = true;
	envcrypt_queue_io(io);
}

/* In a worker: the rest of an I/O whose last request was asynchronous. */
static void envcrypt_crypt_continue(struct envcrypt_io *io)
{
	int err = io->crypt_err;

	io->continuing = false;
	if (!err)
		err = envcrypt_crypt_units(io, true);
	if (err != -EINPROGRESS)
		envcrypt_crypt_finished(io, err);
}

ENVCRYPT_CRYPTO_DONE(envcrypt_crypto_done, envcrypt_crypt_resume)

static int envcrypt_crypt_one_unit(struct envcrypt_io *io, struct bio *in,
				   struct bio *out)
{
	struct envcrypt_ctx *ec = io->ec;
	struct skcipher_request *req = envcrypt_req(io);
	struct crypto_skcipher *tfm = ec->tfm;
	struct bio_vec bv_in = bio_iter_iovec(in, io->iter_in);
	struct bio_vec bv_out = bio_iter_iovec(out, io->iter_out);

	/* Each unit must lie within one page (dma_alignment guarantees it). */
	if (bv_in.bv_len < ec->sector_size || bv_out.bv_len < ec->sector_size)
		return -EIO;

	sg_init_table(&io->sg_in, 1);
	sg_set_page(&io->sg_in, bv_in.bv_page, ec->sector_size, bv_in.bv_offset);
	sg_init_table(&io->sg_out, 1);
	sg_set_page(&io->sg_out, bv_out.bv_page, ec->sector_size,
		    bv_out.bv_offset);
	memset(io->iv, 0, sizeof(io->iv));
	io->iv[0] = cpu_to_le64(io->unit_sector);

	if (ec->sync_tfm && crypto_simd_usable())
		tfm = ec->sync_tfm;
	skcipher_request_set_tfm(req, tfm);
	skcipher_request_set_callback(req, CRYPTO_TFM_REQ_MAY_BACKLOG,
				      envcrypt_crypto_done, io);
	skcipher_request_set_crypt(req, &io->sg_in, &io->sg_out,
				   ec->sector_size, io->iv);

	bio_advance_iter(in, &io->iter_in, ec->sector_size);
	bio_advance_iter(out, &io->iter_out, ec->sector_size);
	io->unit_sector += ec->unit_sectors;

	return envcrypt_is_write(io) ? crypto_skcipher_encrypt(req) :
				       crypto_skcipher_decrypt(req);
}

static int envcrypt_crypt_units(struct envcrypt_io *io, bool may_sleep)
{
	struct bio *in = io->bio;
	struct bio *out = envcrypt_is_write(io) ? io->clone : io->bio;
	int r;

	while (io->iter_in.bi_size) {
		r = envcrypt_crypt_one_unit(io, in, out);
		if (r == -EINPROGRESS || r == -EBUSY)
			return -EINPROGRESS;
		if (r)
			return r;
		/*
		 * As dm-crypt's crypt_convert(): the SIMD cipher runs with
		 * preemption off, and without a preemptible kernel a worker
		 * busy with a large I/O on a slow CPU yields only where it
		 * says so.
		 */
		if (may_sleep)
			cond_resched();
	}
	return 0;
}

static void envcrypt_run_crypt(struct envcrypt_io *io, bool may_sleep)
{
	int r = envcrypt_crypt_units(io, may_sleep);

	if (r != -EINPROGRESS)
		envcrypt_crypt_finished(io, r);
}

/* ---- reads: remap, then decrypt the caller's pages in place ---------- */

static void envcrypt_read_done(struct envcrypt_io *io)
{
	struct bio *bio = io->bio;

	envcrypt_count(io);
	bio->bi_status = io->status;
	bio->bi_end_io = io->orig_end_io;
	bio_endio(bio);
}

/*
 * Hands a lone read from its hard-interrupt completion to this CPU's
 * softirq, which runs when the interrupt returns: no thread is woken.
 * Interrupts are off here, so this CPU's queue stays ours.
 */
static void envcrypt_queue_bh(struct envcrypt_io *io)
{
	struct envcrypt_bh_queue *queue = this_cpu_ptr(io->ec->bh_queues);

	if (llist_add(&io->bh_entry, &queue->ios))
		envcrypt_bh_schedule(&queue->bh);
}

static void envcrypt_bh_drain(struct envcrypt_bh *bh)
{
	struct envcrypt_bh_queue *queue =
		container_of(bh, struct envcrypt_bh_queue, bh);
	struct llist_node *ios = llist_reverse_order(llist_del_all(&queue->ios));
	struct envcrypt_io *io, *next;

	llist_for_each_entry_safe(io, next, ios, bh_entry)
		envcrypt_run_crypt(io, false);
}

static void envcrypt_read_endio(struct bio *bio)
{
	struct envcrypt_io *io = bio->bi_private;

	if (bio->bi_status) {
		/*
		 * Readahead "can fail anytime" (device mapper fails it while a
		 * device is suspended); the reader then reads the page with a
		 * plain bio, whose failure is an error.  So this is not one.
		 */
		io->readahead_declined = bio->bi_opf & REQ_RAHEAD;
		io->status = bio->bi_status;
		envcrypt_read_done(io);
		return;
	}
	if (!envcrypt_process_here(io))
		envcrypt_queue_io(io);
	else if (!envcrypt_context_allows_crypto())
		envcrypt_queue_bh(io);
	else
		envcrypt_run_crypt(io, false);
}

static int envcrypt_map_read(struct envcrypt_io *io)
{
	struct bio *bio = io->bio;

	io->iter_in = bio->bi_iter;
	io->iter_out = bio->bi_iter;
	io->orig_end_io = bio->bi_end_io;
	bio->bi_end_io = envcrypt_read_endio;
	bio->bi_private = io;
	return DM_MAPIO_REMAPPED;
}

/* ---- writes: encrypt into bounce pages, submit the clone ------------- */

/* The number of bounce pages this device may hold. */
static unsigned long envcrypt_bounce_cap(void)
{
	unsigned long cap = (unsigned long)READ_ONCE(max_bounce_kib) >>
			    (PAGE_SHIFT - 10);

	if (!cap)
		cap = totalram_pages() / ENVCRYPT_BOUNCE_RAM_SHARE /
		      max(atomic_read(&envcrypt_devices), 1);
	return max_t(unsigned long, cap, ENVCRYPT_BOUNCE_MIN_PAGES);
}

/*
 * The mempool's allocator: counts every page and refuses past the cap, so
 * that mempool_alloc() falls back to its reserve (and waits for it).
 */
static void *envcrypt_page_alloc(gfp_t gfp, void *data)
{
	struct envcrypt_ctx *ec = data;
	struct page *page;

	if (atomic_long_inc_return(&ec->bounce_pages) > envcrypt_bounce_cap())
		page = NULL;
	else
		page = alloc_page(gfp);
	if (!page)
		atomic_long_dec(&ec->bounce_pages);
	return page;
}

static void envcrypt_page_free(void *element, void *data)
{
	struct envcrypt_ctx *ec = data;

	__free_page(element);
	atomic_long_dec(&ec->bounce_pages);
}

/* Tells envcrypt_free_bounce() to refill the mempool, not the stash. */
static void envcrypt_set_bounce_waiting(struct envcrypt_ctx *ec, bool waiting)
{
	spin_lock_irq(&ec->stash_lock);
	ec->bounce_waiting = waiting;
	spin_unlock_irq(&ec->stash_lock);
}

/* Pages through the mempool: its reserve, if short, is refilled first. */
static void envcrypt_release_pages(struct envcrypt_ctx *ec,
				   struct list_head *pages)
{
	struct page *page, *next;

	list_for_each_entry_safe(page, next, pages, lru) {
		list_del(&page->lru);
		mempool_free(page, &ec->page_pool);
	}
}

/* Moves up to @nr kept pages to @pages. */
static void envcrypt_stash_take(struct envcrypt_ctx *ec,
				struct list_head *pages, unsigned int nr)
{
	unsigned long flags;

	spin_lock_irqsave(&ec->stash_lock, flags);
	for (; nr && ec->stash_nr; nr--, ec->stash_nr--)
		list_move(ec->stash.next, pages);
	ec->stash_used = jiffies;
	spin_unlock_irqrestore(&ec->stash_lock, flags);
}

/* Returns the kept pages to the page allocator once they sat unused. */
static void envcrypt_stash_trim(struct work_struct *work)
{
	struct envcrypt_ctx *ec = container_of(to_delayed_work(work),
					       struct envcrypt_ctx, stash_trim);
	unsigned long idle_at;
	LIST_HEAD(pages);

	spin_lock_irq(&ec->stash_lock);
	idle_at = ec->stash_used +
		  msecs_to_jiffies(ENVCRYPT_STASH_IDLE_MSECS);
	if (time_before(jiffies, idle_at)) {
		spin_unlock_irq(&ec->stash_lock);
		schedule_delayed_work(&ec->stash_trim, idle_at - jiffies);
		return;
	}
	list_splice_init(&ec->stash, &pages);
	ec->stash_nr = 0;
	spin_unlock_irq(&ec->stash_lock);
	envcrypt_release_pages(ec, &pages);
}

/*
 * Gives a ciphertext bio's pages back: to the stash while it has room and
 * no writer waits for pages, else through the mempool, which refills its
 * reserve first (waking the writer) and frees the rest.
 */
static void envcrypt_free_bounce(struct envcrypt_ctx *ec, struct bio *clone)
{
	struct bio_vec *bv;
	struct bvec_iter_all iter_all;
	unsigned long flags;
	LIST_HEAD(spare);
	bool was_empty;

	spin_lock_irqsave(&ec->stash_lock, flags);
	was_empty = !ec->stash_nr;
	bio_for_each_segment_all(bv, clone, iter_all) {
		if (ec->stash_nr < ENVCRYPT_STASH_PAGES &&
		    !ec->bounce_waiting) {
			list_add(&bv->bv_page->lru, &ec->stash);
			ec->stash_nr++;
		} else {
			list_add(&bv->bv_page->lru, &spare);
		}
	}
	if (was_empty && ec->stash_nr)
		schedule_delayed_work(&ec->stash_trim,
				      msecs_to_jiffies(ENVCRYPT_STASH_IDLE_MSECS));
	spin_unlock_irqrestore(&ec->stash_lock, flags);
	bio_put(clone);
	envcrypt_release_pages(ec, &spare);
}

/*
 * Allocates the ciphertext bio.  With a gfp that may not sleep it fails
 * rather than wait; a sleeping caller holds bounce_lock so that only one
 * partially filled bio ever waits on the pool (the others hold all their
 * pages and will return them), which guarantees forward progress.
 * @may_yield: the caller is a worker, which yields between pages.
 */
static struct bio *envcrypt_alloc_bounce(struct envcrypt_io *io, gfp_t gfp,
					 bool may_yield)
{
	struct envcrypt_ctx *ec = io->ec;
	unsigned int remaining = io->bytes;
	unsigned int nr_pages = DIV_ROUND_UP(remaining, PAGE_SIZE);
	LIST_HEAD(kept);
	struct bio *clone;

	/*
	 * Never polled: dm core polls only its own clone of the bio, so a
	 * polled ciphertext bio would wait for a completion nobody reaps.
	 */
	clone = bio_alloc_bioset(ec->dev->bdev, nr_pages,
				 io->bio->bi_opf & ~REQ_POLLED, gfp, &ec->bs);
	if (!clone)
		return NULL;
	envcrypt_stash_take(ec, &kept, nr_pages);
	while (remaining) {
		unsigned int len = min_t(unsigned int, remaining, PAGE_SIZE);
		struct page *page = list_first_entry_or_null(&kept, struct page,
							     lru);

		if (page)
			list_del(&page->lru);
		else
			page = mempool_alloc(&ec->page_pool, gfp);
		/* Only once the kept pages ran out: nothing is left behind. */
		if (!page) {
			envcrypt_free_bounce(ec, clone);
			return NULL;
		}
		__bio_add_page(clone, page, len, 0);
		remaining -= len;
		/*
		 * A fresh page is cleared (init_on_alloc), slowly on an
		 * emulated CPU: twice, a root file system on envcrypt booting
		 * under QEMU's TCG reported an RCU stall with a worker in
		 * clear_page_erms() under this loop.
		 */
		if (may_yield)
			cond_resched();
	}
	return clone;
}

static struct bio *envcrypt_alloc_bounce_wait(struct envcrypt_io *io)
{
	struct envcrypt_ctx *ec = io->ec;
	struct bio *clone = envcrypt_alloc_bounce(io, GFP_NOWAIT | __GFP_NOWARN,
						  true);

	if (clone)
		return clone;
	mutex_lock(&ec->bounce_lock);
	/* Set before the stash is taken: no page is stashed behind our back. */
	envcrypt_set_bounce_waiting(ec, true);
	clone = envcrypt_alloc_bounce(io, GFP_NOIO, true);
	envcrypt_set_bounce_waiting(ec, false);
	mutex_unlock(&ec->bounce_lock);
	return clone;
}

static void envcrypt_write_endio(struct bio *clone)
{
	struct envcrypt_io *io = clone->bi_private;
	struct bio *bio = io->bio;

	io->status = clone->bi_status;
	envcrypt_free_bounce(io->ec, clone);
	envcrypt_count(io);
	bio->bi_status = io->status;
	bio_endio(bio);
}

static void envcrypt_write_encrypted(struct envcrypt_io *io)
{
	struct envcrypt_ctx *ec = io->ec;
	struct bio *clone = io->clone;

	if (io->status) {
		envcrypt_free_bounce(ec, clone);
		envcrypt_count(io);
		io->bio->bi_status = io->status;
		bio_endio(io->bio);
		return;
	}
	clone->bi_private = io;
	clone->bi_end_io = envcrypt_write_endio;
	clone->bi_ioprio = io->bio->bi_ioprio;
	clone->bi_iter.bi_sector = io->bio->bi_iter.bi_sector;
	dm_submit_bio_remap(io->bio, clone);
}

static void envcrypt_start_write(struct envcrypt_io *io, struct bio *clone,
				 bool may_sleep)
{
	io->clone = clone;
	io->iter_in = io->bio->bi_iter;
	io->iter_out = clone->bi_iter;
	envcrypt_run_crypt(io, may_sleep);
}

/* A queued write, in a worker: here the bounce pages may be waited for. */
static void envcrypt_write_queued(struct envcrypt_io *io)
{
	struct bio *clone = envcrypt_alloc_bounce_wait(io);

	if (unlikely(!clone)) {
		/* Cannot happen with GFP_NOIO mempools; fail rather than oops. */
		io->status = BLK_STS_RESOURCE;
		envcrypt_count(io);
		io->bio->bi_status = io->status;
		bio_endio(io->bio);
		return;
	}
	envcrypt_start_write(io, clone, true);
}

static int envcrypt_map_write(struct envcrypt_io *io)
{
	struct bio *clone = NULL;

	/*
	 * Inline only without sleeping: map runs with bios of this device
	 * possibly queued, unsubmitted, on current->bio_list.
	 */
	if (envcrypt_context_allows_crypto() && envcrypt_process_here(io))
		clone = envcrypt_alloc_bounce(io, GFP_NOWAIT | __GFP_NOWARN,
					      false);
	if (clone)
		envcrypt_start_write(io, clone, false);
	else
		envcrypt_queue_io(io);
	return DM_MAPIO_SUBMITTED;
}

/* ---- the crypt queue and its workers ---------------------------------- */

/*
 * Queues an I/O for the workers (any context, hard interrupts included)
 * and wakes an idle worker if there is one: while more I/O waits than
 * workers run, every CPU gets a share.
 */
static void envcrypt_queue_io(struct envcrypt_io *io)
{
	struct envcrypt_ctx *ec = io->ec;
	struct envcrypt_worker *idle;
	unsigned long flags;

	spin_lock_irqsave(&ec->queue_lock, flags);
	list_add_tail(&io->queue_entry, &ec->queue);
	idle = list_first_entry_or_null(&ec->idle_workers,
					struct envcrypt_worker, idle_entry);
	if (idle)
		list_del(&idle->idle_entry);
	spin_unlock_irqrestore(&ec->queue_lock, flags);

	if (idle)
		queue_work(ec->crypt_wq, &idle->work);
}

/*
 * The next queued I/O, or NULL after marking the worker idle.  Both under
 * the lock: an I/O queued after this worker saw the queue empty finds it
 * idle and queues it again (a work item may be queued while it runs).
 */
static struct envcrypt_io *envcrypt_next_io(struct envcrypt_worker *worker)
{
	struct envcrypt_ctx *ec = worker->ec;
	struct envcrypt_io *io;

	spin_lock_irq(&ec->queue_lock);
	io = list_first_entry_or_null(&ec->queue, struct envcrypt_io,
				      queue_entry);
	if (io)
		list_del(&io->queue_entry);
	else
		list_add(&worker->idle_entry, &ec->idle_workers);
	spin_unlock_irq(&ec->queue_lock);
	return io;
}

/*
 * Drains the queue.  The plug collects the encrypted writes: the lower
 * device gets them in batches of up to ENVCRYPT_BATCH_BYTES of work, and
 * the plug is flushed whenever the worker sleeps (e.g. waiting for bounce
 * pages), so nothing waits on it.
 */
static void envcrypt_worker_fn(struct work_struct *work)
{
	struct envcrypt_worker *worker =
		container_of(work, struct envcrypt_worker, work);
	unsigned int batched = 0;
	struct envcrypt_io *io;
	struct blk_plug plug;

	blk_start_plug(&plug);
	while ((io = envcrypt_next_io(worker))) {
		/* Read before the I/O is handed on: it may complete at once. */
		batched += io->bytes;
		if (io->continuing)
			envcrypt_crypt_continue(io);
		else if (envcrypt_is_write(io))
			envcrypt_write_queued(io);
		else
			envcrypt_run_crypt(io, true);
		if (batched >= ENVCRYPT_BATCH_BYTES) {
			blk_finish_plug(&plug);
			blk_start_plug(&plug);
			batched = 0;
		}
		cond_resched();
	}
	blk_finish_plug(&plug);
}

/* ---- target hooks ----------------------------------------------------- */

static bool envcrypt_bio_aligned(struct envcrypt_ctx *ec, struct bio *bio,
				 sector_t target_sector)
{
	return !((target_sector | bio_sectors(bio)) & (ec->unit_sectors - 1));
}

static int envcrypt_map(struct dm_target *ti, struct bio *bio)
{
	struct envcrypt_ctx *ec = ti->private;
	sector_t target_sector = dm_target_offset(ti, bio->bi_iter.bi_sector);
	struct envcrypt_io *io;

	bio_set_dev(bio, ec->dev->bdev);
	bio->bi_iter.bi_sector = ec->start + target_sector;

	/* Empty flushes and (when allowed) discards carry no data. */
	if (unlikely(bio->bi_opf & REQ_PREFLUSH && !bio_sectors(bio)))
		return DM_MAPIO_REMAPPED;
	if (bio_op(bio) == REQ_OP_DISCARD)
		return ec->allow_discards ? DM_MAPIO_REMAPPED : DM_MAPIO_KILL;
	if (unlikely(bio_op(bio) != REQ_OP_READ && bio_op(bio) != REQ_OP_WRITE))
		return DM_MAPIO_KILL;

	if (unlikely(!envcrypt_bio_aligned(ec, bio, target_sector))) {
		DMERR_LIMIT("Misaligned I/O: sector %llu, %u sectors, unit %u bytes",
			    (unsigned long long)target_sector, bio_sectors(bio),
			    ec->sector_size);
		atomic64_inc(&ec->stats.errors);
		return DM_MAPIO_KILL;
	}
	if (bio_data_dir(bio) == WRITE &&
	    bio_sectors(bio) > ENVCRYPT_MAX_WRITE_SECTORS)
		dm_accept_partial_bio(bio, ENVCRYPT_MAX_WRITE_SECTORS);

	io = dm_per_bio_data(bio, ti->per_io_data_size);
	io->ec = ec;
	io->bio = bio;
	io->clone = NULL;
	io->unit_sector = target_sector;
	io->bytes = bio->bi_iter.bi_size;
	io->status = BLK_STS_OK;
	io->continuing = false;
	io->readahead_declined = false;
	atomic_inc(&ec->inflight);

	return bio_data_dir(bio) == WRITE ? envcrypt_map_write(io) :
					    envcrypt_map_read(io);
}

/* ---- key handling ----------------------------------------------------- */

/*
 * Sets the key of both transforms; it is copied into their contexts.  On
 * failure the two may disagree: the caller wipes both (key_lock held).
 */
static int envcrypt_setkey(struct envcrypt_ctx *ec, const u8 *key)
{
	int r = crypto_skcipher_setkey(ec->tfm, key, ENVCRYPT_KEY_SIZE);

	if (!r && ec->sync_tfm)
		r = crypto_skcipher_setkey(ec->sync_tfm, key, ENVCRYPT_KEY_SIZE);
	return r;
}

/*
 * Marks the key wiped and gives both transforms the same random key, which
 * is then forgotten: whatever they held before is gone, and they agree.
 * key_lock held.
 */
static int envcrypt_wipe_key(struct envcrypt_ctx *ec)
{
	u8 junk[ENVCRYPT_KEY_SIZE];
	int r;

	ec->key_valid = false;
	get_random_bytes(junk, sizeof(junk));
	r = envcrypt_setkey(ec, junk);
	memzero_explicit(junk, sizeof(junk));
	return r;
}

/*
 * Finds logon key @desc through the keyrings of the calling process
 * (envcryptctl's thread keyring).  A missing key may mean an upcall to
 * /sbin/request-key, which can take seconds: never called under key_lock.
 */
static struct key *envcrypt_find_key(const char *desc, char **error)
{
	struct key *key = request_key(&key_type_logon, desc, NULL);

	if (IS_ERR(key))
		*error = "Key not found";
	return key;
}

/*
 * Loads the 64-byte payload of @key into the cipher and drops the
 * reference.  The payload is copied straight from the key into the tfm, so
 * no copy of the key stays in the target.
 */
static int envcrypt_load_key(struct envcrypt_ctx *ec, struct key *key,
			     char **error)
{
	const struct user_key_payload *payload;
	int r;

	down_read(&key->sem);
	payload = user_key_payload_locked(key);
	if (!payload) {
		*error = "Key not found";
		r = -EKEYREVOKED;
	} else if (payload->datalen != ENVCRYPT_KEY_SIZE) {
		*error = "Key must be 64 bytes";
		r = -EINVAL;
	} else {
		r = envcrypt_setkey(ec, payload->data);
		if (r)
			*error = "Cipher rejected the key";
	}
	up_read(&key->sem);
	key_put(key);
	return r;
}

/*
 * Can the table status echo @c so that "dmsetup load" of "dmsetup table"
 * gives it back?  libdevmapper doubles every backslash it passes to the
 * kernel, so an argument loaded through it never holds a character that
 * dm_split_args() takes as white space, and backslashes are literal: they
 * are echoed as they are.  A white-space character can only come from a
 * raw ioctl escaping it; dmsetup ends a table line at a newline and cuts
 * it at '#' (a comment).  Such descriptions are refused rather than shown
 * in a form that would load differently.
 */
static bool envcrypt_desc_char_ok(unsigned char c)
{
	return c >= 0x20 && c != 0x7f && !isspace(c) && c != '#';
}

/* Parses "logon:<desc>" and returns a copy of <desc>, or NULL. */
static char *envcrypt_parse_key_ref(const char *key_ref)
{
	size_t prefix_len = strlen(ENVCRYPT_KEY_PREFIX);
	const unsigned char *c;

	if (strncmp(key_ref, ENVCRYPT_KEY_PREFIX, prefix_len) ||
	    !key_ref[prefix_len])
		return NULL;
	for (c = (const unsigned char *)key_ref + prefix_len; *c; c++)
		if (!envcrypt_desc_char_ok(*c))
			return NULL;
	return kstrdup(key_ref + prefix_len, GFP_KERNEL);
}

/* ---- suspend/resume, messages, status --------------------------------- */

/*
 * Once this returns 0 the device goes live on the key it checked: key
 * messages are refused from here on (suspended is false) until the next
 * postsuspend.
 */
static int envcrypt_preresume(struct dm_target *ti)
{
	struct envcrypt_ctx *ec = ti->private;
	int r = 0;

	mutex_lock(&ec->key_lock);
	if (ec->key_valid) {
		ec->suspended = false;
	} else {
		DMERR("Refusing to resume with a wiped key; send \"key set\" first");
		r = -ENOKEY;
	}
	mutex_unlock(&ec->key_lock);
	return r;
}

/* No I/O of the target is in flight any more (dm core waited for it). */
static void envcrypt_postsuspend(struct dm_target *ti)
{
	struct envcrypt_ctx *ec = ti->private;

	mutex_lock(&ec->key_lock);
	ec->suspended = true;
	mutex_unlock(&ec->key_lock);
}

/*
 * "key set", with key_lock held and the target suspended; @desc and @key
 * are what the caller parsed and looked up (NULL or an error pointer if
 * that failed), and are consumed.  The old key is wiped first: a "key set"
 * that fails for any reason leaves the target wiped, refusing to resume,
 * never on a key the caller did not ask for.
 */
static int envcrypt_message_key_set(struct envcrypt_ctx *ec, char *desc,
				    struct key *key, char *error)
{
	int r;

	envcrypt_wipe_key(ec);
	if (!desc) {
		DMWARN("key set: key must be logon:<description> without blanks or '#'");
		return -EINVAL;
	}
	if (IS_ERR(key))
		r = PTR_ERR(key);
	else
		r = envcrypt_load_key(ec, key, &error);
	if (r) {
		DMWARN("key set: %s; the key stays wiped", error);
		kfree(desc);
		envcrypt_wipe_key(ec);
		return r;
	}
	kfree(ec->key_desc);
	ec->key_desc = desc;
	ec->key_valid = true;
	return 0;
}

static int envcrypt_message(struct dm_target *ti, unsigned int argc,
			    char **argv, char *result, unsigned int maxlen)
{
	struct envcrypt_ctx *ec = ti->private;
	bool is_key = argc >= 2 && !strcasecmp(argv[0], "key");
	bool wipe = is_key && argc == 2 && !strcasecmp(argv[1], "wipe");
	bool set = is_key && argc == 3 && !strcasecmp(argv[1], "set");
	struct key *key = NULL;
	char *desc = NULL;
	char *error = NULL;
	int r;

	if (!wipe && !set) {
		DMWARN("Unrecognised message; expected \"key wipe\" or \"key set logon:<desc>\"");
		return -EINVAL;
	}
	/* The lookup may wait for user space: done before taking key_lock. */
	if (set) {
		desc = envcrypt_parse_key_ref(argv[2]);
		if (desc)
			key = envcrypt_find_key(desc, &error);
	}

	mutex_lock(&ec->key_lock);
	if (!ec->suspended || !dm_suspended(ti)) {
		DMWARN("key messages are accepted only while suspended");
		r = -EBUSY;
	} else if (wipe) {
		r = envcrypt_wipe_key(ec);
	} else {
		r = envcrypt_message_key_set(ec, desc, key, error);
		desc = NULL;
		key = NULL;
	}
	mutex_unlock(&ec->key_lock);
	if (!IS_ERR_OR_NULL(key))
		key_put(key);
	kfree(desc);
	return r;
}

static void envcrypt_status(struct dm_target *ti, status_type_t type,
			    unsigned int status_flags, char *result,
			    unsigned int maxlen)
{
	struct envcrypt_ctx *ec = ti->private;
	struct envcrypt_stats *stats = &ec->stats;
	unsigned int sz = 0;

	/* key_desc may be replaced and key_valid change under a message. */
	mutex_lock(&ec->key_lock);
	switch (type) {
	case STATUSTYPE_INFO:
		DMEMIT("%s %u %s %lld %lld %lld %lld %lld %ld %lu",
		       crypto_skcipher_driver_name(ec->tfm), ec->sector_size,
		       ec->key_valid ? "valid" : "wiped",
		       atomic64_read(&stats->reads),
		       atomic64_read(&stats->writes),
		       atomic64_read(&stats->read_bytes),
		       atomic64_read(&stats->write_bytes),
		       atomic64_read(&stats->errors),
		       atomic_long_read(&ec->bounce_pages),
		       envcrypt_bounce_cap());
		break;
	case STATUSTYPE_TABLE:
		/* Echoed as is: see envcrypt_desc_char_ok(). */
		DMEMIT("%s %llu %s%s %u sector_size:%u%s", ec->dev->name,
		       (unsigned long long)ec->start, ENVCRYPT_KEY_PREFIX,
		       ec->key_desc, ec->allow_discards ? 2 : 1,
		       ec->sector_size,
		       ec->allow_discards ? " allow_discards" : "");
		break;
	case STATUSTYPE_IMA:
		DMEMIT_TARGET_NAME_VERSION(ti->type);
		DMEMIT(",cipher=aes-xts-plain64,key_type=logon,key_size=%u",
		       ENVCRYPT_KEY_SIZE);
		DMEMIT(",sector_size=%u,allow_discards=%c,key_state=%s;",
		       ec->sector_size, ec->allow_discards ? 'y' : 'n',
		       ec->key_valid ? "valid" : "wiped");
		break;
	}
	mutex_unlock(&ec->key_lock);
}

static int envcrypt_iterate_devices(struct dm_target *ti,
				    iterate_devices_callout_fn fn, void *data)
{
	struct envcrypt_ctx *ec = ti->private;

	return fn(ti, ec->dev, ec->start, ti->len, data);
}

static void envcrypt_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	struct envcrypt_ctx *ec = ti->private;

	limits->logical_block_size = max_t(unsigned int,
					   limits->logical_block_size,
					   ec->sector_size);
	limits->physical_block_size = max_t(unsigned int,
					    limits->physical_block_size,
					    ec->sector_size);
	limits->io_min = max_t(unsigned int, limits->io_min, ec->sector_size);
	/*
	 * Keeps every data unit within one page of the caller's buffer; a
	 * lower device that needs more alignment keeps its own (bios are
	 * remapped to it with the caller's pages for reads).
	 */
	limits->dma_alignment = max_t(unsigned int, limits->dma_alignment,
				      limits->logical_block_size - 1);
}

/* ---- construction and destruction ------------------------------------- */

static void envcrypt_free_bh_queues(struct envcrypt_ctx *ec)
{
	int cpu;

	if (!ec->bh_queues)
		return;
	for_each_possible_cpu(cpu)
		envcrypt_bh_kill(&per_cpu_ptr(ec->bh_queues, cpu)->bh);
	free_percpu(ec->bh_queues);
}

static void envcrypt_dtr(struct dm_target *ti)
{
	struct envcrypt_ctx *ec = ti->private;

	if (!ec)
		return;
	if (ec->crypt_wq)
		destroy_workqueue(ec->crypt_wq);
	envcrypt_free_bh_queues(ec);
	kfree(ec->workers);
	/* No I/O is left: nothing can arm the trim again. */
	cancel_delayed_work_sync(&ec->stash_trim);
	envcrypt_release_pages(ec, &ec->stash);
	mempool_exit(&ec->page_pool);
	bioset_exit(&ec->bs);
	if (ec->sync_tfm)
		crypto_free_skcipher(ec->sync_tfm);
	if (ec->tfm)
		crypto_free_skcipher(ec->tfm);
	if (ec->dev)
		dm_put_device(ti, ec->dev);
	kfree(ec->key_desc);
	mutex_destroy(&ec->key_lock);
	mutex_destroy(&ec->bounce_lock);
	kfree(ec);
	ti->private = NULL;
	atomic_dec(&envcrypt_devices);
}

static int envcrypt_parse_options(struct envcrypt_ctx *ec,
				  struct dm_arg_set *as, char **error)
{
	static const struct dm_arg _args[] = {
		{0, 2, "Invalid number of optional arguments"},
	};
	unsigned int opt_params;
	const char *opt;
	int r;

	if (!as->argc)
		return 0;
	r = dm_read_arg_group(_args, as, &opt_params, error);
	if (r)
		return r;

	while (opt_params--) {
		unsigned int size;
		char dummy;

		opt = dm_shift_arg(as);
		if (!strcasecmp(opt, "allow_discards")) {
			ec->allow_discards = true;
		} else if (sscanf(opt, "sector_size:%u%c", &size, &dummy) == 1) {
			if (size != 512 && size != 4096) {
				*error = "Invalid sector size";
				return -EINVAL;
			}
			ec->sector_size = size;
		} else {
			*error = "Unknown optional argument";
			return -EINVAL;
		}
	}
	return 0;
}

static int envcrypt_check_geometry(struct dm_target *ti, char **error)
{
	struct envcrypt_ctx *ec = ti->private;

	ec->unit_sectors = ec->sector_size >> SECTOR_SHIFT;
	if (ti->len & (ec->unit_sectors - 1)) {
		*error = "Target length not a multiple of sector size";
		return -EINVAL;
	}
	if (ec->start & (ec->unit_sectors - 1)) {
		*error = "Device offset not a multiple of sector size";
		return -EINVAL;
	}
	if (ec->start + ti->len < ec->start ||
	    ec->start + ti->len > bdev_nr_sectors(ec->dev->bdev)) {
		*error = "Device too small for target";
		return -EINVAL;
	}
	return 0;
}

/*
 * The fast path: a synchronous implementation called directly whenever
 * the FPU is usable (envcrypt_crypt_one_unit()).  Chosen by what the
 * running kernel offers:
 *  - xts(aes) is itself synchronous: it is the fast path, nothing more is
 *    needed.  So from 6.16 on, where x86 registers its AES-NI/VAES
 *    implementations directly (usable in process and softirq context)
 *    and "__xts(aes)" no longer exists; so too on a CPU without them.
 *  - xts(aes) is the asynchronous SIMD wrapper (x86 up to 6.15): its
 *    internal "__xts(aes)" is the fast path, if it is the very
 *    implementation the wrapper runs (checked by driver name: an
 *    accelerator that outranks it must serve every unit, so that STATUS
 *    names the driver actually in use).
 *  - otherwise (an asynchronous accelerator): no fast path.
 */
static bool envcrypt_cipher_is_sync(struct crypto_skcipher *tfm)
{
	struct crypto_skcipher *sync;
	bool same;

	sync = crypto_alloc_skcipher(ENVCRYPT_CIPHER, 0,
				     CRYPTO_ALG_ASYNC |
				     CRYPTO_ALG_ALLOCATES_MEMORY);
	if (IS_ERR(sync))
		return false;
	same = !strcmp(crypto_skcipher_driver_name(sync),
		       crypto_skcipher_driver_name(tfm));
	crypto_free_skcipher(sync);
	return same;
}

static void envcrypt_alloc_sync_cipher(struct envcrypt_ctx *ec)
{
	struct crypto_skcipher *tfm;

	if (envcrypt_cipher_is_sync(ec->tfm))
		return;
	tfm = crypto_alloc_skcipher(ENVCRYPT_SYNC_CIPHER, CRYPTO_ALG_INTERNAL,
				    CRYPTO_ALG_INTERNAL | CRYPTO_ALG_ASYNC);
	if (IS_ERR(tfm))
		return;
	if (strcmp(crypto_skcipher_driver_name(tfm) + 2,
		   crypto_skcipher_driver_name(ec->tfm))) {
		crypto_free_skcipher(tfm);
		return;
	}
	ec->sync_tfm = tfm;
}

static int envcrypt_alloc_cipher(struct dm_target *ti, char **error)
{
	struct envcrypt_ctx *ec = ti->private;
	unsigned int reqsize;

	/*
	 * As dm-crypt: a driver that allocates memory per request could fail
	 * I/O under memory pressure (or deadlock when swapping to us).
	 */
	ec->tfm = crypto_alloc_skcipher(ENVCRYPT_CIPHER, 0,
					CRYPTO_ALG_ALLOCATES_MEMORY);
	if (IS_ERR(ec->tfm)) {
		int r = PTR_ERR(ec->tfm);

		ec->tfm = NULL;
		*error = "Cannot allocate xts(aes) cipher";
		return r;
	}
	envcrypt_alloc_sync_cipher(ec);
	reqsize = crypto_skcipher_reqsize(ec->tfm);
	if (ec->sync_tfm)
		reqsize = max(reqsize, crypto_skcipher_reqsize(ec->sync_tfm));
	ec->req_offset = ALIGN(sizeof(struct envcrypt_io),
			       crypto_tfm_ctx_alignment());
	/* The request's context may need kmalloc's alignment (as dm-crypt). */
	ti->per_io_data_size = ALIGN(ec->req_offset +
				     sizeof(struct skcipher_request) + reqsize,
				     ARCH_KMALLOC_MINALIGN);
	return 0;
}

static int envcrypt_alloc_bh_queues(struct envcrypt_ctx *ec)
{
	int cpu;

	ec->bh_queues = alloc_percpu(struct envcrypt_bh_queue);
	if (!ec->bh_queues)
		return -ENOMEM;
	for_each_possible_cpu(cpu) {
		struct envcrypt_bh_queue *queue = per_cpu_ptr(ec->bh_queues, cpu);

		init_llist_head(&queue->ios);
		envcrypt_bh_init(&queue->bh, envcrypt_bh_drain);
	}
	return 0;
}

/* One worker per online CPU, all idle. */
static int envcrypt_alloc_workers(struct envcrypt_ctx *ec)
{
	unsigned int i;

	ec->nr_workers = num_online_cpus();
	ec->workers = kcalloc(ec->nr_workers, sizeof(*ec->workers), GFP_KERNEL);
	if (!ec->workers)
		return -ENOMEM;
	for (i = 0; i < ec->nr_workers; i++) {
		INIT_WORK(&ec->workers[i].work, envcrypt_worker_fn);
		ec->workers[i].ec = ec;
		list_add_tail(&ec->workers[i].idle_entry, &ec->idle_workers);
	}
	return 0;
}

static int envcrypt_alloc_io_resources(struct dm_target *ti, char **error)
{
	struct envcrypt_ctx *ec = ti->private;
	const char *devname = dm_table_device_name(ti->table);
	int r;

	r = bioset_init(&ec->bs, BIO_POOL_SIZE, 0,
			BIOSET_NEED_BVECS | BIOSET_NEED_RESCUER);
	if (r)
		goto fail;
	/* Enough for the largest write bio on its own: always progresses. */
	r = mempool_init(&ec->page_pool, BIO_MAX_VECS, envcrypt_page_alloc,
			 envcrypt_page_free, ec);
	if (r)
		goto fail;
	ec->crypt_wq = alloc_workqueue("kenvcryptd/%s",
				       WQ_UNBOUND | WQ_MEM_RECLAIM |
				       WQ_CPU_INTENSIVE, 0, devname);
	if (!ec->crypt_wq) {
		r = -ENOMEM;
		goto fail;
	}
	r = envcrypt_alloc_workers(ec);
	if (r)
		goto fail;
	r = envcrypt_alloc_bh_queues(ec);
	if (r)
		goto fail;
	return 0;
fail:
	*error = "Cannot allocate I/O resources";
	return r;
}

/*
 * <dev> <dev_offset> logon:<desc> [<#opt_args> <opt_arg>...]
 */
static int envcrypt_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct envcrypt_ctx *ec;
	struct dm_arg_set as;
	struct key *key;
	unsigned long long start;
	char dummy;
	int r;

	if (argc < 3) {
		ti->error = "Not enough arguments";
		return -EINVAL;
	}

	ec = kzalloc(sizeof(*ec), GFP_KERNEL);
	if (!ec) {
		ti->error = "Cannot allocate context";
		return -ENOMEM;
	}
	ti->private = ec;
	/* Counted before the mempool fills: the cap shares RAM between us. */
	atomic_inc(&envcrypt_devices);
	ec->sector_size = 4096;
	mutex_init(&ec->bounce_lock);
	mutex_init(&ec->key_lock);
	/* Not live until resumed: key messages may come before that. */
	ec->suspended = true;
	spin_lock_init(&ec->stash_lock);
	INIT_LIST_HEAD(&ec->stash);
	INIT_DELAYED_WORK(&ec->stash_trim, envcrypt_stash_trim);
	spin_lock_init(&ec->queue_lock);
	INIT_LIST_HEAD(&ec->queue);
	INIT_LIST_HEAD(&ec->idle_workers);
	ec->busy_until = jiffies;
	ec->probe_every = ENVCRYPT_PROBE_MIN;

	if (sscanf(argv[1], "%llu%c", &start, &dummy) != 1 ||
	    start != (sector_t)start) {
		ti->error = "Invalid device offset";
		r = -EINVAL;
		goto bad;
	}
	ec->start = start;

	r = dm_get_device(ti, argv[0], dm_table_get_mode(ti->table), &ec->dev);
	if (r) {
		ti->error = "Device lookup failed";
		goto bad;
	}

	ec->key_desc = envcrypt_parse_key_ref(argv[2]);
	if (!ec->key_desc) {
		ti->error = "Key must be logon:<description>";
		r = -EINVAL;
		goto bad;
	}

	as.argc = argc - 3;
	as.argv = argv + 3;
	r = envcrypt_parse_options(ec, &as, &ti->error);
	if (r)
		goto bad;
	if (as.argc) {
		ti->error = "Too many arguments";
		r = -EINVAL;
		goto bad;
	}

	r = envcrypt_check_geometry(ti, &ti->error);
	if (r)
		goto bad;
	r = envcrypt_alloc_cipher(ti, &ti->error);
	if (r)
		goto bad;
	key = envcrypt_find_key(ec->key_desc, &ti->error);
	if (IS_ERR(key)) {
		r = PTR_ERR(key);
		goto bad;
	}
	r = envcrypt_load_key(ec, key, &ti->error);
	if (r)
		goto bad;
	ec->key_valid = true;
	r = envcrypt_alloc_io_resources(ti, &ti->error);
	if (r)
		goto bad;

	ti->num_flush_bios = 1;
	ti->num_discard_bios = ec->allow_discards ? 1 : 0;
	/*
	 * Writes are submitted with dm_submit_bio_remap(), which starts the
	 * accounting; dm core must not touch a bio we own after map returns,
	 * as a write that fails before submission is already completed.
	 */
	ti->accounts_remapped_io = true;
	/*
	 * Every write allocates bounce pages: without a limit, swap-out
	 * could have so many writes in flight that reclaim deadlocks on the
	 * very memory it is trying to free (as dm-crypt once did).
	 */
	ti->limit_swap_bios = true;
	return 0;

bad:
	envcrypt_dtr(ti);
	return r;
}

static struct target_type envcrypt_target = {
	.name = "envcrypt",
	.version = {1, 2, 1},
	.module = THIS_MODULE,
	.ctr = envcrypt_ctr,
	.dtr = envcrypt_dtr,
	.map = envcrypt_map,
	.preresume = envcrypt_preresume,
	.postsuspend = envcrypt_postsuspend,
	.status = envcrypt_status,
	.message = envcrypt_message,
	.iterate_devices = envcrypt_iterate_devices,
	.io_hints = envcrypt_io_hints,
};

static int __init dm_envcrypt_init(void)
{
	return dm_register_target(&envcrypt_target);
}

static void __exit dm_envcrypt_exit(void)
{
	dm_unregister_target(&envcrypt_target);
}

module_init(dm_envcrypt_init);
module_exit(dm_envcrypt_exit);

MODULE_AUTHOR("envcrypt developers");
MODULE_DESCRIPTION(DM_NAME " target for envelope-encrypted AES-256-XTS disks");
MODULE_LICENSE("GPL");
MODULE_VERSION("1.0.0");
