import re, json, sys
src=open(sys.argv[1]).read()
body=src[src.index('func TestFormat('):]
body=body[:body.index('range tests')]
# split top-level case blocks: lines starting with "\t\t{" and ending "\t\t},"
blocks=re.findall(r'\n\t\t\{\n(.*?)\n\t\t\},', body, re.S)
def go_str(tok):
    tok=tok.strip()
    if tok.startswith('`'): return tok[1:-1]
    return json.loads(tok)  # Go "..." escapes are JSON-compatible for these tests
def hcl_str(s):
    return json.dumps(s, ensure_ascii=False).replace('${','$${').replace('%{','%%{')
def val(v):
    v=v.strip()
    m=re.fullmatch(r'cty\.StringVal\((".*"|`.*`)\)', v, re.S)
    if m: return hcl_str(go_str(m.group(1)))
    m=re.fullmatch(r'cty\.NumberIntVal\((-?\d+)\)', v)
    if m: return m.group(1)
    m=re.fullmatch(r'cty\.NumberFloatVal\((-?[\d.eE+-]+)\)', v)
    if m: return m.group(1)
    if v=='cty.True': return 'true'
    if v=='cty.False': return 'false'
    if re.fullmatch(r'cty\.NullVal\(.*\)', v): return 'null'
    if v=='cty.EmptyObjectVal': return '{}'
    if v=='cty.EmptyTupleVal': return '[]'
    raise ValueError(v)
def split_args(s):
    out=[];depth=0;cur='';q=None
    for ch in s:
        if q:
            cur+=ch
            if ch==q and not cur.endswith('\\'+q): q=None
            continue
        if ch in '"`': q=ch; cur+=ch; continue
        if ch in '([{': depth+=1
        if ch in ')]}': depth-=1
        if ch==',' and depth==0: out.append(cur); cur=''; continue
        cur+=ch
    if cur.strip(): out.append(cur)
    return [a.strip() for a in out if a.strip()]
cases=[];skipped=0
for b in blocks:
    parts=split_args(b)
    if len(parts)!=4: skipped+=1; continue
    fmt,args,want,err=parts
    try:
        f=val(fmt)
        if args=='nil': a=[]
        else:
            m=re.fullmatch(r'\[\]cty\.Value\{(.*)\}', args, re.S)
            a=[val(x) for x in split_args(m.group(1))]
        errtext=go_str(err)
        call='format(%s)'%', '.join([f]+a)
        if errtext:
            cases.append({"name":"format %s -> error %s"%(f,errtext[:60]),"expr":call,"error":""})
        else:
            m=re.fullmatch(r'cty\.StringVal\((".*"|`.*`)\)', want.strip(), re.S)
            if not m: skipped+=1; continue
            cases.append({"name":"format %s with %s"%(f,', '.join(a)),"expr":call,"want":go_str(m.group(1))})
    except Exception as e:
        skipped+=1
DIFF={"format \"%f things\" with \"100000000000000000000000000000000000001\"":("numbers are 64-bit floats: a 39-digit number keeps 16 significant digits","99999999999999997748809823456034029568.000000 things")}
for c in cases:
    if c["name"] in DIFF:
        c["differs"],c["standby"]=DIFF[c["name"]]
print(len(cases),"cases",skipped,"skipped")
json.dump({"source":"go-cty's format tests, ported mechanically: zclconf/go-cty cty/function/stdlib/format_test.go (TestFormat), every case whose arguments are strings, numbers, bools, null, {} or [] and whose result is known (unknown-value cases skipped). Error cases expect a diagnostic (standby's own wording).","cases":cases}, open(sys.argv[2],'w'), indent=2, ensure_ascii=False)
open(sys.argv[2],'a').write("\n")
