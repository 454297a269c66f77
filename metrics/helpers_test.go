package metrics

import (
	"io"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/tlsalpn/tlsalpn/manager"
)

func specFor(name string) manager.Spec { return manager.Spec{Names: []string{name}} }

func writeText(w io.Writer, f *dto.MetricFamily) { expfmt.MetricFamilyToText(w, f) }
