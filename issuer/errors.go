package issuer

import "errors"

// Errors for what the CA demands and the configuration does not give. They
// say what is missing in the CA's terms, not which flag or setting gives it:
// that depends on the program (cmd/tlsalpn words it for its flags), so
// callers test for them with errors.Is.
var (
	// ErrEABRequired means the CA requires External Account Binding and
	// Config.EAB is nil.
	ErrEABRequired = errors.New("requires External Account Binding")
	// ErrTOSRequired means the CA has terms of service and
	// Config.AgreeTOS is false.
	ErrTOSRequired = errors.New("requires agreeing to its terms of service")
	// ErrNoProfiles means a profile was requested from a CA that offers
	// none.
	ErrNoProfiles = errors.New("the CA offers no profiles")
	// ErrDirectory means the CA's directory could not be read: the URL,
	// the trust in its certificate, or the network.
	ErrDirectory = errors.New("cannot reach the CA")
)
