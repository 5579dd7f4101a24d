// kstatus, the status library Flux, kpt and cli-utils' applier use to wait for resources,
// reading Tessera's objects: a JSON list of Kubernetes objects on stdin (as `kubectl get -o
// json` prints them), one JSON line per object on stdout with what kstatus computes.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// As client-go decodes objects (integers stay int64, which kstatus's accessors expect).
	list := &unstructured.UnstructuredList{}
	if err := list.UnmarshalJSON(input); err != nil {
		fail(fmt.Errorf("stdin is not a JSON list of objects: %w", err))
	}
	out := json.NewEncoder(os.Stdout)
	for i := range list.Items {
		obj := &list.Items[i]
		computed, err := status.Compute(obj)
		if err != nil {
			fail(fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err))
		}
		r := result{obj.GetKind(), obj.GetName(), computed.Status.String(), computed.Message}
		if err := out.Encode(r); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(1)
}
