package llama

import (
	"context"
	"fmt"

	"github.com/magicconch/conch/internal/outfile"
)

// estimateSize is about how large g becomes when llama.cpp's quantiser converts it to q.
func estimateSize(g *GGUF, q QuantType) int64 {
	n := g.DataOffset
	for _, t := range g.Tensors {
		typ := t.Type
		if quantizable(t) {
			typ = q.weight
		}
		n += tensorBytes(t, typ) + 32
	}
	return n
}

// tensorBytes is the size of t stored as typ (F16 when rows do not fit typ's blocks, as
// llama.cpp's fallback ends).
func tensorBytes(t TensorInfo, typ uint32) int64 {
	blck := int64(typeBlock(typ))
	if blck == 0 || t.Shape[0]%blck != 0 {
		typ, blck = 1, 1
	}
	return int64(typeRowSize(typ, t.Shape[0])) * (t.Elements() / t.Shape[0])
}

// finish checks the written file (it must load, as what kind of model says in the
// error), renames it into place and reports which tensors kept another type than q.
func finishOutput(ctx context.Context, f *outfile.File, q QuantType, what string) ([]TypeFallback, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if err := VerifyModel(f.Tmp); err != nil {
		return nil, 0, fmt.Errorf("the %s model does not load: %w", what, err)
	}
	written, err := Inspect(f.Tmp)
	if err != nil {
		return nil, 0, err
	}
	fb, converted := fallbacks(written, q)
	size, err := f.Commit()
	if err != nil {
		return nil, 0, err
	}
	warnFallbacks(q, fb, converted)
	return fb, size, nil
}
