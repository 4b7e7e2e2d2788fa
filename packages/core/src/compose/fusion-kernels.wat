;; Float32 kernels for fusing logits (compose/fusion-kernels.ts embeds this module's bytes; its test assembles this
;; text with wabt and checks they are the same). Arguments are byte offsets into the module's memory and element
;; counts; each loop takes four lanes at a time (f32x4) and finishes the last n mod 4 elements one by one. Every
;; operation rounds to float32.
(module
  (memory (export "memory") 1)

  ;; out[i] = (a[i] - shift + b[i]) * scale
  (func (export "combine") (param $out i32) (param $a i32) (param $b i32) (param $n i32) (param $shift f32) (param $scale f32)
    (local $i i32) (local $vec i32) (local $end i32) (local $vs v128) (local $vk v128)
    (local.set $vs (f32x4.splat (local.get $shift)))
    (local.set $vk (f32x4.splat (local.get $scale)))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vec (i32.and (local.get $end) (i32.const -16)))
    (block $done
      (loop $simd
        (br_if $done (i32.ge_u (local.get $i) (local.get $vec)))
        (v128.store (i32.add (local.get $out) (local.get $i))
          (f32x4.mul
            (f32x4.add
              (f32x4.sub (v128.load (i32.add (local.get $a) (local.get $i))) (local.get $vs))
              (v128.load (i32.add (local.get $b) (local.get $i))))
            (local.get $vk)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $simd)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $end)))
        (f32.store (i32.add (local.get $out) (local.get $i))
          (f32.mul
            (f32.add
              (f32.sub (f32.load (i32.add (local.get $a) (local.get $i))) (local.get $shift))
              (f32.load (i32.add (local.get $b) (local.get $i))))
            (local.get $scale)))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $tail))))

  ;; out[i] = weight * (x[i] - shift), or out[i] += weight * (x[i] - shift) when $add is not 0
  (func (export "weighted") (param $out i32) (param $x i32) (param $n i32) (param $weight f32) (param $shift f32) (param $add i32)
    (local $i i32) (local $vec i32) (local $end i32) (local $vs v128) (local $vw v128) (local $v v128) (local $s f32)
    (local.set $vs (f32x4.splat (local.get $shift)))
    (local.set $vw (f32x4.splat (local.get $weight)))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vec (i32.and (local.get $end) (i32.const -16)))
    (block $done
      (loop $simd
        (br_if $done (i32.ge_u (local.get $i) (local.get $vec)))
        (local.set $v
          (f32x4.mul (local.get $vw) (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $i))) (local.get $vs))))
        (if (local.get $add)
          (then (local.set $v (f32x4.add (v128.load (i32.add (local.get $out) (local.get $i))) (local.get $v)))))
        (v128.store (i32.add (local.get $out) (local.get $i)) (local.get $v))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $simd)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $s
          (f32.mul (local.get $weight) (f32.sub (f32.load (i32.add (local.get $x) (local.get $i))) (local.get $shift))))
        (if (local.get $add)
          (then (local.set $s (f32.add (f32.load (i32.add (local.get $out) (local.get $i))) (local.get $s)))))
        (f32.store (i32.add (local.get $out) (local.get $i)) (local.get $s))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $tail))))
)
