;; Float32 kernels over rows of logits (sampling/logit-kernels.ts embeds this module's bytes; its test assembles this
;; text with wabt and checks they are the same). Arguments are byte offsets into the module's memory and element
;; counts; the fusion loops take four lanes at a time (f32x4) and finish the last n mod 4 elements one by one, every
;; operation rounding to float32.
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

  ;; The largest of x[0 .. 16 n16) in each of 16 lanes (element i in lane i mod 16, four f32x4 accumulators so that no
  ;; comparison waits for the one before), and its first index: 16 f32 then 16 i32 at $out. A lane whose values are
  ;; all -inf or NaN keeps -inf and index -1 (NaN is never greater).
  (func (export "lanemax") (param $out i32) (param $x i32) (param $n16 i32)
    (local $i i32) (local $end i32) (local $p i32)
    (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128)
    (local $i0 v128) (local $i1 v128) (local $i2 v128) (local $i3 v128)
    (local $c v128) (local $v v128) (local $m v128)
    (local.set $b0 (f32x4.splat (f32.const -inf))) (local.set $b1 (local.get $b0)) (local.set $b2 (local.get $b0)) (local.set $b3 (local.get $b0))
    (local.set $i0 (i32x4.splat (i32.const -1))) (local.set $i1 (local.get $i0)) (local.set $i2 (local.get $i0)) (local.set $i3 (local.get $i0))
    (local.set $c (v128.const i32x4 0 1 2 3))
    (local.set $end (i32.shl (local.get $n16) (i32.const 6)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $p (i32.add (local.get $x) (local.get $i)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $m (f32x4.gt (local.get $v) (local.get $b0)))
        (local.set $b0 (v128.bitselect (local.get $v) (local.get $b0) (local.get $m)))
        (local.set $i0 (v128.bitselect (local.get $c) (local.get $i0) (local.get $m)))
        (local.set $v (v128.load offset=16 (local.get $p)))
        (local.set $m (f32x4.gt (local.get $v) (local.get $b1)))
        (local.set $b1 (v128.bitselect (local.get $v) (local.get $b1) (local.get $m)))
        (local.set $i1 (v128.bitselect (i32x4.add (local.get $c) (i32x4.splat (i32.const 4))) (local.get $i1) (local.get $m)))
        (local.set $v (v128.load offset=32 (local.get $p)))
        (local.set $m (f32x4.gt (local.get $v) (local.get $b2)))
        (local.set $b2 (v128.bitselect (local.get $v) (local.get $b2) (local.get $m)))
        (local.set $i2 (v128.bitselect (i32x4.add (local.get $c) (i32x4.splat (i32.const 8))) (local.get $i2) (local.get $m)))
        (local.set $v (v128.load offset=48 (local.get $p)))
        (local.set $m (f32x4.gt (local.get $v) (local.get $b3)))
        (local.set $b3 (v128.bitselect (local.get $v) (local.get $b3) (local.get $m)))
        (local.set $i3 (v128.bitselect (i32x4.add (local.get $c) (i32x4.splat (i32.const 12))) (local.get $i3) (local.get $m)))
        (local.set $c (i32x4.add (local.get $c) (i32x4.splat (i32.const 16))))
        (local.set $i (i32.add (local.get $i) (i32.const 64)))
        (br $l)))
    (v128.store (local.get $out) (local.get $b0)) (v128.store offset=16 (local.get $out) (local.get $b1))
    (v128.store offset=32 (local.get $out) (local.get $b2)) (v128.store offset=48 (local.get $out) (local.get $b3))
    (v128.store offset=64 (local.get $out) (local.get $i0)) (v128.store offset=80 (local.get $out) (local.get $i1))
    (v128.store offset=96 (local.get $out) (local.get $i2)) (v128.store offset=112 (local.get $out) (local.get $i3)))
)
