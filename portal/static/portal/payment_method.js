// The card form: the provider's card element collects the card, `confirmCardSetup` saves it at
// the provider against the setup session created for this page, and only the session's id is
// posted to the portal, which reads it back from the provider before saving it as the default.
// The same calls work with Stripe.js and with localstripe's stand-in for it.
(function () {
  "use strict";
  const form = document.getElementById("card-form");
  if (!form || typeof Stripe === "undefined") return;
  const stripe = Stripe(form.dataset.publishableKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const errors = document.getElementById("card-errors");
  const button = form.querySelector("button[type=submit]");
  let confirmed = false;

  form.addEventListener("submit", async (event) => {
    if (confirmed) return; // the second, real submit carries the confirmed session's id
    event.preventDefault();
    button.disabled = true;
    errors.textContent = "";
    const result = await stripe.confirmCardSetup(form.dataset.clientSecret, {
      payment_method: { card: card },
    });
    if (result.error) {
      errors.textContent = result.error.message || "The card could not be saved.";
      button.disabled = false;
      return;
    }
    form.elements.setup_intent.value = result.setupIntent.id;
    confirmed = true;
    form.submit();
  });
})();
