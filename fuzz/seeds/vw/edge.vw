1 2.5 'tag|ns:0.5 a b:2 c:-1e-3 |other x
-1 |f a:2
|empty
 'only-tag |a
