/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * dm-envcrypt on-disk header, shared by envcryptctl and the tests.
 *
 * A disk carries two copies of one 4096-byte header: the primary at byte 0
 * and the secondary at ENVCRYPT_HDR_SECONDARY_OFFSET.  A detached header file
 * (envcryptctl --header FILE) holds the same bytes at the same offsets.  All
 * integers are little-endian; strings are NUL-padded and need not be
 * NUL-terminated when they fill their field.  Every copy ends with a SHA-256
 * over the bytes before it.  The full description, including the update
 * protocol, is Documentation/format/on-disk.rst.
 */
#ifndef _UAPI_LINUX_DM_ENVCRYPT_H
#define _UAPI_LINUX_DM_ENVCRYPT_H

#include <linux/types.h>

#define ENVCRYPT_HDR_MAGIC		"ENVCRYPT"
#define ENVCRYPT_HDR_MAGIC_LEN		8
/* Version 1: the envelope alone.  Version 2 adds the recovery block; the
 * rest of the layout, and the CMK wrap's encryption context (whose
 * header_version stays "1"), are unchanged.  envcryptctl writes version 1
 * unless a disk carries, or has been upgraded to carry, a recovery wrap.
 */
#define ENVCRYPT_HDR_VERSION		1
#define ENVCRYPT_HDR_VERSION_RECOVERY	2
#define ENVCRYPT_HDR_VERSION_MAX	2

#define ENVCRYPT_HDR_SIZE		4096
#define ENVCRYPT_HDR_PRIMARY_OFFSET	0ULL
#define ENVCRYPT_HDR_SECONDARY_OFFSET	(512ULL * 1024)
/* Bytes a device or detached header file must hold for both copies. */
#define ENVCRYPT_HDR_AREA_SIZE		(ENVCRYPT_HDR_SECONDARY_OFFSET + ENVCRYPT_HDR_SIZE)

/* Data area: 1 MiB aligned; the default leaves 15 MiB after the headers for
 * future metadata (online re-encryption journal and hot zone).
 */
#define ENVCRYPT_DATA_ALIGN		(1024ULL * 1024)
#define ENVCRYPT_DEFAULT_DATA_OFFSET	(16ULL * 1024 * 1024)

#define ENVCRYPT_CIPHER_LEN		32
#define ENVCRYPT_CIPHER_DEFAULT		"aes-xts-plain64"
#define ENVCRYPT_LABEL_LEN		64
#define ENVCRYPT_UUID_LEN		16
#define ENVCRYPT_CMK_URI_LEN		512
#define ENVCRYPT_NONCE_LEN		12
#define ENVCRYPT_TAG_LEN		16
#define ENVCRYPT_WRAPPED_KEY_MAX	128
#define ENVCRYPT_DATA_KEY_LEN		64	/* AES-256-XTS: K1 || K2 */
#define ENVCRYPT_KCV_LEN		16
#define ENVCRYPT_CHECKSUM_LEN		32

/* envelope.wrap_alg */
#define ENVCRYPT_WRAP_AES_256_GCM	1
/* envelope.kcv_alg: HMAC-SHA256(DK, "envcrypt-kcv-v1" || uuid), first 16 bytes */
#define ENVCRYPT_KCV_HMAC_SHA256_128	1

/* recovery.alg (version 2) */
#define ENVCRYPT_RECOVERY_NONE		0
/* X25519, HKDF-SHA256, AES-256-GCM: Documentation/security/key-hierarchy.rst */
#define ENVCRYPT_RECOVERY_X25519_AES_256_GCM	1
#define ENVCRYPT_RECOVERY_KEY_ID_LEN	32	/* SHA-256 of the public key's SPKI DER */
#define ENVCRYPT_RECOVERY_DIGEST_LEN	32	/* SHA-256 of the canonical context */
#define ENVCRYPT_X25519_KEY_LEN		32

struct envcrypt_geometry {
	char	cipher[ENVCRYPT_CIPHER_LEN];	/* "aes-xts-plain64" */
	__le32	sector_size;			/* encryption unit: 512 or 4096 */
	__le32	key_size;			/* DK bytes: 64 */
	__le64	data_offset;			/* bytes from device start, 1 MiB aligned */
	__le64	data_size;			/* bytes; 0 = to the end of the device */
	__u8	reserved[32];			/* zero; future re-encryption state */
};

struct envcrypt_envelope {
	char	cmk_uri[ENVCRYPT_CMK_URI_LEN];	/* local://<region>/<id>, kmip://<host>:<port>/<uid> */
	__le32	cmk_version;			/* CMK version that wrapped the DK */
	__le32	wrap_alg;			/* ENVCRYPT_WRAP_* */
	__le32	wrapped_key_len;		/* bytes used in wrapped_key */
	__le32	kcv_alg;			/* ENVCRYPT_KCV_* */
	__u8	nonce[ENVCRYPT_NONCE_LEN];
	__u8	tag[ENVCRYPT_TAG_LEN];
	__u8	pad[4];				/* zero */
	__u8	wrapped_key[ENVCRYPT_WRAPPED_KEY_MAX];
	__u8	kcv[ENVCRYPT_KCV_LEN];
};

/* A second wrap of the DK under an offline recovery public key.  All zero
 * in version 1, and in version 2 when alg is ENVCRYPT_RECOVERY_NONE.
 */
struct envcrypt_recovery {
	__le32	alg;				/* ENVCRYPT_RECOVERY_* */
	__le32	wrapped_key_len;		/* bytes used in wrapped_key (64) */
	__u8	key_id[ENVCRYPT_RECOVERY_KEY_ID_LEN];
	__u8	context_digest[ENVCRYPT_RECOVERY_DIGEST_LEN];
	__u8	ephemeral_key[ENVCRYPT_X25519_KEY_LEN];	/* X25519 public key */
	__u8	nonce[ENVCRYPT_NONCE_LEN];
	__u8	tag[ENVCRYPT_TAG_LEN];
	__u8	pad[4];				/* zero */
	__u8	wrapped_key[ENVCRYPT_WRAPPED_KEY_MAX];
};

struct envcrypt_header {
	__u8	magic[ENVCRYPT_HDR_MAGIC_LEN];	/* "ENVCRYPT", no NUL */
	__le32	version;			/* ENVCRYPT_HDR_VERSION */
	__le32	header_size;			/* ENVCRYPT_HDR_SIZE */
	__le64	sequence;			/* bumped on every update; highest valid wins */
	__le64	copy_offset;			/* where this copy belongs on the device */
	__u8	uuid[ENVCRYPT_UUID_LEN];	/* RFC 4122 version 4 */
	char	label[ENVCRYPT_LABEL_LEN];
	__le64	flags;				/* zero in versions 1 and 2 */
	struct envcrypt_geometry geometry;
	struct envcrypt_envelope envelope;
	struct envcrypt_recovery recovery;	/* version 2; zero in version 1 */
	__u8	reserved[2888];			/* zero */
	__u8	checksum[ENVCRYPT_CHECKSUM_LEN];	/* SHA-256 of bytes 0..4063 */
};

#ifdef __cplusplus
#define ENVCRYPT_UAPI_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define ENVCRYPT_UAPI_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

ENVCRYPT_UAPI_ASSERT(sizeof(struct envcrypt_geometry) == 88, "geometry layout");
ENVCRYPT_UAPI_ASSERT(sizeof(struct envcrypt_envelope) == 704, "envelope layout");
ENVCRYPT_UAPI_ASSERT(sizeof(struct envcrypt_recovery) == 264, "recovery layout");
ENVCRYPT_UAPI_ASSERT(sizeof(struct envcrypt_header) == ENVCRYPT_HDR_SIZE, "header layout");
ENVCRYPT_UAPI_ASSERT(__builtin_offsetof(struct envcrypt_header, recovery) == 912, "recovery offset");
ENVCRYPT_UAPI_ASSERT(__builtin_offsetof(struct envcrypt_header, geometry) == 120, "geometry offset");
ENVCRYPT_UAPI_ASSERT(__builtin_offsetof(struct envcrypt_header, envelope) == 208, "envelope offset");
ENVCRYPT_UAPI_ASSERT(__builtin_offsetof(struct envcrypt_header, checksum) ==
		     ENVCRYPT_HDR_SIZE - ENVCRYPT_CHECKSUM_LEN, "checksum offset");

#undef ENVCRYPT_UAPI_ASSERT

#endif /* _UAPI_LINUX_DM_ENVCRYPT_H */
