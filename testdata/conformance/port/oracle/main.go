// Oracle: evaluates HCL expressions (one per line on stdin) with the real
// hclsyntax and go-cty stdlib, printing the value as Terraform's
// jsonencode would (or the error). Used to derive conformance expectations.
package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

func to(t cty.Type) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType, AllowNull: true}},
		Type:   func(args []cty.Value) (cty.Type, error) { return t, nil },
		Impl: func(args []cty.Value, rt cty.Type) (cty.Value, error) {
			return convert.Convert(args[0], t)
		},
	})
}

func main() {
	ctx := &hcl.EvalContext{Functions: map[string]function.Function{
		"abs": stdlib.AbsoluteFunc, "ceil": stdlib.CeilFunc, "floor": stdlib.FloorFunc,
		"format": stdlib.FormatFunc, "formatlist": stdlib.FormatListFunc,
		"jsonencode": stdlib.JSONEncodeFunc, "jsondecode": stdlib.JSONDecodeFunc,
		"log": stdlib.LogFunc, "max": stdlib.MaxFunc, "min": stdlib.MinFunc,
		"parseint": stdlib.ParseIntFunc, "pow": stdlib.PowFunc, "signum": stdlib.SignumFunc,
		"range": stdlib.RangeFunc, "length": stdlib.LengthFunc,
		"tostring": to(cty.String), "tonumber": to(cty.Number), "tolist": to(cty.List(cty.DynamicPseudoType)),
		"toset": to(cty.Set(cty.DynamicPseudoType)), "tomap": to(cty.Map(cty.DynamicPseudoType)),
		"element": stdlib.ElementFunc, "index": stdlib.IndexFunc, "contains": stdlib.ContainsFunc,
		"distinct": stdlib.DistinctFunc, "sort": stdlib.SortFunc, "substr": stdlib.SubstrFunc,
		"slice": stdlib.SliceFunc, "chunklist": stdlib.ChunklistFunc, "zipmap": stdlib.ZipmapFunc,
		"lookup": stdlib.LookupFunc, "concat": stdlib.ConcatFunc, "setunion": stdlib.SetUnionFunc,
		"keys": stdlib.KeysFunc, "values": stdlib.ValuesFunc, "merge": stdlib.MergeFunc,
		"split": stdlib.SplitFunc, "compact": stdlib.CompactFunc,
		"coalesce": stdlib.CoalesceFunc, "flatten": stdlib.FlattenFunc, "reverse": stdlib.ReverseListFunc,
	}}
	// The variables of port/equality.hcl, typed as Terraform converts them.
	a, b, x := cty.StringVal("a"), cty.StringVal("b"), cty.StringVal("x")
	ctx.Variables = map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{
		"names": cty.ListVal([]cty.Value{a, b}),
		"none":  cty.ListValEmpty(cty.String),
		"nums":  cty.ListValEmpty(cty.Number),
		"tags":  cty.MapVal(map[string]cty.Value{"a": x}),
		"obj":   cty.ObjectVal(map[string]cty.Value{"a": x}),
		"set":   cty.SetVal([]cty.Value{a, b}),
		"raw":   cty.TupleVal([]cty.Value{a, b}),
		"pair":  cty.TupleVal([]cty.Value{a, cty.NumberIntVal(1)}),
		"lists": cty.ListVal([]cty.Value{cty.ListVal([]cty.Value{a})}),
	})}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		expr, diags := hclsyntax.ParseExpression([]byte(line), "x", hcl.Pos{Line: 1, Column: 1})
		if diags.HasErrors() {
			fmt.Printf("%s\tPARSE-ERROR %s\n", line, diags.Error())
			continue
		}
		v, diags := expr.Value(ctx)
		if diags.HasErrors() {
			fmt.Printf("%s\tERROR %s\n", line, diags.Error())
			continue
		}
		b, err := ctyjson.SimpleJSONValue{Value: v}.MarshalJSON()
		if err != nil {
			fmt.Printf("%s\tJSON-ERROR %s\n", line, err)
			continue
		}
		fmt.Printf("%s\t%s\n", line, b)
	}
}
