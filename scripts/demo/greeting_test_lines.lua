-- What the order-status flow says first: included by order_status_test.lua.
return {
  bot "Hi! I can tell you where your order is.",
  bot "Your order number? (empty line to leave)",
}
