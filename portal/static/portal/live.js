// The live regions (meters, charts) poll with htmx: hx-trigger="every Ns, visibilitychange from:document".
// The Content-Security-Policy allows no eval, so htmx trigger filters ("[!document.hidden]")
// cannot run; instead every htmx request is cancelled while the tab is hidden (only the polls
// fire then), and the visibilitychange trigger refreshes the page's numbers once it is shown.
document.addEventListener("htmx:confirm", (event) => {
  if (document.hidden) event.preventDefault();
});
