package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tlsalpn/tlsalpn/storage"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors of this backend, returned wrapped (with the operation, the key and etcd's own error)
// so that callers can tell with errors.Is what went wrong and what to tell the operator.
var (
	// ErrWrongKey is returned by Open when the encryption key is not the one the data under the
	// prefix was encrypted with. Open has then written nothing.
	ErrWrongKey = errors.New("storage/etcd: wrong encryption key for the data under this prefix")
	// ErrNoEncryptionKey is returned when a private value is to be stored or read and the
	// Store has no encryption key (Config.EncryptionKey).
	ErrNoEncryptionKey = errors.New("storage/etcd: private value, but no encryption key is configured")
	// ErrTooLarge is returned when a value is larger than etcd takes in one request (the
	// server's --max-request-bytes, 1.5 MiB by default). Nothing was written.
	ErrTooLarge = errors.New("storage/etcd: value too large for etcd")
	// ErrQuota is returned when etcd's database is full (--quota-backend-bytes; etcd raises a
	// NOSPACE alarm and refuses writes until it is compacted, defragmented and the alarm
	// disarmed). Nothing was written.
	ErrQuota = errors.New("storage/etcd: etcd database space exceeded (quota)")
	// ErrAuth is returned when etcd refuses the user name and password, or the user lacks the
	// permission on the key.
	ErrAuth = errors.New("storage/etcd: etcd refused the credentials or the permission")
	// ErrUnavailable is returned when etcd did not answer in time: unreachable, or without a
	// quorum.
	// It wraps storage.ErrUnavailable, which callers that know no backend test for.
	ErrUnavailable error = unavailableError{}
	// ErrCorrupt is returned when a stored value is not in this backend's format, or fails
	// authentication (it was altered, or moved from another key).
	ErrCorrupt = errors.New("storage/etcd: stored value is damaged or not written by tlsalpn")
)

// kind returns the sentinel error that describes err, or nil.
func kind(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return ErrTooLarge
	case errors.Is(err, rpctypes.ErrNoSpace):
		return ErrQuota
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrPermissionDenied),
		errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrAuthOldRevision),
		errors.Is(err, rpctypes.ErrUserEmpty):
		return ErrAuth
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.ResourceExhausted:
			if strings.Contains(st.Message(), "larger than max") {
				return ErrTooLarge // the client's own limit on a message
			}
		case codes.Unauthenticated, codes.PermissionDenied:
			return ErrAuth
		case codes.Unavailable:
			return ErrUnavailable
		}
	}
	return nil
}

// retryable reports errors after which the same request may succeed on another attempt: a lost
// leader, a member gone, an attempt that timed out. Everything else is final.
func retryable(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(err, rpctypes.ErrTimeoutWaitAppliedIndex),
		errors.Is(err, rpctypes.ErrLeaderChanged),
		errors.Is(err, rpctypes.ErrNoLeader),
		errors.Is(err, rpctypes.ErrNotCapable),
		errors.Is(err, rpctypes.ErrStopped):
		return true
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return true
	}
	return false
}

// opError wraps err from operation op on key with its kind.
func opError(op, key string, err error) error {
	if k := kind(err); k != nil && !errors.Is(err, k) {
		return fmt.Errorf("storage/etcd: %s %q: %w: %w", op, key, k, err)
	}
	return fmt.Errorf("storage/etcd: %s %q: %w", op, key, err)
}

// unavailableError is ErrUnavailable: it also matches storage.ErrUnavailable, so that the
// manager pauses a renewal while etcd is away instead of taking its certificate for missing.
type unavailableError struct{}

func (unavailableError) Error() string        { return "storage/etcd: etcd unavailable" }
func (unavailableError) Is(target error) bool { return target == storage.ErrUnavailable }
