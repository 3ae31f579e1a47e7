// The `kmip://` KMS backend: CMKs held by a KMIP 1.4 key manager, reached over
// TLS with a client certificate.  Wrap/unwrap are KMIP Encrypt/Decrypt.
// It offers key administration (KeyAdministration) and no other capability
// of kms.h; what a KMIP server cannot offer (aliases, lifecycle, BYOK,
// grants, audit, re-enabling a revoked key, cancelling a deletion) is
// answered with ErrorCode::kUsage naming the server; see
// Documentation/kms/kmip.rst.
#pragma once

#include <memory>

#include "config/config.h"
#include "kms/kms.h"
#include "util/result.h"

namespace envcrypt {

// Opens a KMIP backend for one configured endpoint.  No connection is made
// until the first operation.  The server identifies the client by its
// certificate, so there is no principal argument.  supports(uri) answers true
// for kmip://<host>:<port>/<uid> URIs naming this endpoint's host and port
// (and for kmip://<endpoint name>/<uid>); the URIs it returns are always the
// host:port form.  Key references may also be a bare uid or alias/<Name>.
Result<std::unique_ptr<KmsClient>> open_kmip_kms(const KmipEndpoint& endpoint);

}  // namespace envcrypt
