"""Writes train.csv and test.csv of the demo intent set from the templates below.

The templates were written by hand for this project. Each is used in one split only,
so the test set holds phrasings the model never saw; slots, greetings, sign-offs and
the odd typo vary each template's utterances. Run it again and the files come out the
same (fixed seed): `python data/demo_intents/generate.py`.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SEED = 2024
TEST_TEMPLATES_PER_INTENT = 6
TRAIN_ROWS_PER_INTENT = 48
TEST_ROWS_PER_INTENT = 14

SLOTS: dict[str, list[str]] = {
    "order": [
        "order 48213",
        "order #A-10293",
        "my order",
        "order number 7731904",
        "the order I placed",
        "order 55-2019",
        "my last order",
    ],
    "item": [
        "headphones",
        "blue rain jacket",
        "phone case",
        "coffee machine",
        "running shoes",
        "laptop stand",
        "kids' bike helmet",
        "wireless charger",
        "desk lamp",
        "set of kitchen knives",
    ],
    "when": [
        "last Tuesday",
        "two weeks ago",
        "on the 3rd",
        "yesterday",
        "ten days ago",
        "over a week ago",
        "on Monday",
        "at the start of the month",
    ],
    "amount": ["$19.99", "£45", "€120", "$7.50", "$250", "£3.20", "€64.90"],
    "city": ["Leeds", "Austin", "Lyon", "Dublin", "Denver", "Bristol", "Toronto"],
    "plan": ["unlimited", "family", "10GB", "premium", "basic", "5G max"],
}

PREFIXES = [
    "",
    "",
    "",
    "",
    "Hi, ",
    "Hello, ",
    "Hey, ",
    "Good morning. ",
    "Hi there! ",
    "Excuse me, ",
    "Quick question: ",
    "Sorry to bother you, but ",
    "Hello team, ",
]
SUFFIXES = [
    "",
    "",
    "",
    "",
    " Thanks.",
    " Thank you!",
    " Please help.",
    " asap please",
    " Thanks in advance.",
    " Cheers",
    " :(",
    " Appreciate it.",
]

TEMPLATES: dict[str, list[str]] = {
    "track_order": [
        "Where is {order}?",
        "I ordered {item} {when} and it still hasn't arrived.",
        "Can you tell me when my package will be delivered?",
        "How do I track {order}?",
        "The tracking page hasn't updated for days, is my parcel lost?",
        "Has {order} shipped yet?",
        "What's the delivery status of my {item}?",
        "My parcel was supposed to come {when}, where is it?",
        "Is there a tracking number for {order}?",
        "When can I expect my delivery?",
        "still waiting on my package",
        "The courier says delivered but I have nothing at my door.",
        "Any update on the {item} I bought {when}?",
        "How long does shipping usually take? I'm waiting for {order}.",
        "order status",
        "I need to know if my {item} will arrive before the weekend because "
        "it's a birthday present and the party is on Saturday.",
        "Could you check where {order} is right now?",
        "My package seems to be stuck at the depot in {city}.",
        "It's been ages, where's my stuff?",
        "Can I get an estimated arrival date for {order}?",
        "The app just says 'processing' for {order}, has it left the warehouse?",
        "did my order ship",
        "I was told delivery would be {when} but nothing has come",
        "Please find out what happened to my {item}.",
        "Which courier is delivering {order} and when?",
        "Tracking number doesn't work on the courier website",
    ],
    "cancel_order": [
        "Please cancel {order}.",
        "I want to cancel the {item} I ordered {when}.",
        "How can I cancel an order I just placed?",
        "I changed my mind, can I still cancel {order}?",
        "Cancel my order please",
        "I ordered the wrong size by mistake, please cancel it before it ships.",
        "Is it too late to cancel {order}?",
        "Stop {order} from being sent, I don't need it anymore.",
        "I placed the same order twice, cancel one of them.",
        "Can you cancel the {item}? I found it cheaper elsewhere.",
        "how do i cancel",
        "I'd like to call off my purchase of the {item}.",
        "Don't ship {order}, I want to cancel.",
        "There is no cancel button in the app for {order}, can you do it for me?",
        "I need to cancel an order, it was a mistake.",
        "Please withdraw my order for the {item} and confirm by email.",
        "My kid ordered a {item} on my account without asking, cancel it please.",
        "Can I cancel part of {order} and keep the rest?",
        "Cancel everything I ordered {when}.",
        "I no longer want the {item}, please don't send it",
        "Want to cancel order",
        "I ordered {when} and the delivery date is too late for me, so please "
        "cancel the whole thing and refund my card.",
        "How long do I have to cancel an order after paying?",
        "I would like to cancel {order} if it hasn't been dispatched yet.",
        "accidentally bought two {item}s, cancel one",
        "Please stop the order, I entered the wrong card.",
    ],
    "return_item": [
        "How do I return the {item}?",
        "I want to send back {order}.",
        "The {item} doesn't fit, can I return it?",
        "What is your return policy?",
        "Can I return something I bought {when}?",
        "I'd like a return label for my {item}.",
        "return item",
        "I don't like the colour of the {item}, I want to return it for a refund.",
        "Is there a fee for returning items?",
        "Where do I drop off a return in {city}?",
        "How many days do I have to return {order}?",
        "I need to return a gift I received, I don't have the receipt.",
        "Can I exchange the {item} for a different size?",
        "The {item} isn't what I expected, how do I send it back?",
        "I want to return part of {order}",
        "Do you do free returns?",
        "Please arrange a pickup, I'm returning the {item}.",
        "I bought the {item} {when} and never opened it, can I still take it back?",
        "Can I return an item to a store instead of posting it?",
        "send back my purchase",
        "I printed the return label but lost it, can you send another?",
        "My {item} is fine but I don't need it anymore, how do I return it and "
        "how long until I see the money back on my card?",
        "Returning {order}, what do I put in the box?",
        "Can I return sale items?",
        "I want to swap the {item} for another model",
        "how to return stuff",
    ],
    "refund_status": [
        "Where is my refund?",
        "I returned the {item} {when} but haven't got my money back.",
        "When will I get refunded for {order}?",
        "My refund of {amount} still hasn't shown up on my card.",
        "How long do refunds take?",
        "You said you'd refund me {when}, where is the money?",
        "refund not received",
        "Has my refund for {order} been processed?",
        "The courier picked up my return {when}, when do I get my {amount} back?",
        "I only got part of my refund, {amount} is missing.",
        "Check the status of my refund please",
        "It's been two weeks since you received my return and still no refund.",
        "Was the refund sent to my card or to store credit?",
        "My bank says no refund has arrived from you.",
        "still waiting for my money back",
        "Can you confirm the refund for the {item} went through?",
        "I cancelled {order} {when}, why haven't I been refunded yet?",
        "Your email says refund issued but I can't see {amount} anywhere.",
        "How do I know if my refund was approved?",
        "When does the refund for a cancelled order hit my account?",
        "refund status for {order}",
        "I was promised a refund within 5 days and it has been more than ten, "
        "this is really frustrating, can someone look into it?",
        "Did you receive the {item} I sent back? I need my refund.",
        "The refund went to an old card that is closed, what happens now?",
        "money back still missing",
        "Why is my refund pending?",
    ],
    "change_address": [
        "I need to change the delivery address for {order}.",
        "Can I update my shipping address?",
        "I moved to {city}, please change my address.",
        "Wrong address on {order}, can you fix it?",
        "Please deliver my {item} to my work address instead.",
        "change address",
        "How do I edit the address on an order that has already been placed?",
        "I typed the wrong house number, can you correct it?",
        "Send {order} to my neighbour's house instead please.",
        "Can I redirect a parcel that's already on its way?",
        "My postcode is wrong on {order}.",
        "I won't be home, can I change where the {item} is delivered?",
        "update my billing and shipping address",
        "I'd like my order delivered to a pickup point in {city}.",
        "Where in my account do I change my default address?",
        "We're moving next week, please send everything to the new flat.",
        "The address on my account is old, I left {city} {when}.",
        "Can you ship {order} to a different address than the billing one?",
        "new delivery address for my order",
        "I put my old address by accident when ordering the {item} {when}, "
        "please change it before the courier collects it.",
        "Is it possible to change the apartment number on {order}?",
        "adress is wrong pls change",
        "Please add a second address to my account for deliveries.",
        "How can I change the address for future orders?",
        "Deliver to my office in {city} rather than home.",
        "I need the {item} sent somewhere else.",
    ],
    "damaged_item": [
        "My {item} arrived broken.",
        "The box was crushed and the {item} inside is damaged.",
        "I received the wrong item in {order}.",
        "The {item} stopped working after one day.",
        "There's a crack on the {item} I got {when}.",
        "item arrived damaged",
        "You sent me a {item} but I ordered something else.",
        "Half of {order} is missing from the box.",
        "The {item} is scratched and looks used.",
        "What do I do if my order came damaged?",
        "My {item} is faulty, it won't turn on at all.",
        "Parts are missing from the {item}.",
        "wrong size delivered",
        "The seal on the packaging was broken when it arrived.",
        "The {item} I ordered {when} came with a big dent in it.",
        "I opened the parcel and the {item} was smashed, I have photos of it, "
        "what do you need from me to get a replacement?",
        "Received someone else's order instead of mine.",
        "Defective {item}, please replace it.",
        "There was liquid leaking all over the box.",
        "The colour of the {item} is completely different from the picture.",
        "broken on arrival",
        "My {item} has a manufacturing defect.",
        "Only one shoe in the box!",
        "The screen of the {item} is cracked.",
        "got the wrong thing",
        "The {item} is damaged, can I get a new one sent out?",
    ],
    "double_charge": [
        "I was charged twice for {order}.",
        "Why is there a charge of {amount} I don't recognise?",
        "My bill is higher than it should be this month.",
        "You took {amount} from my account twice.",
        "I see two identical payments for the {item}.",
        "overcharged",
        "The price at checkout was {amount} but I was charged more.",
        "There's an extra fee on my bill that nobody told me about.",
        "Why was I billed {when} when I already paid?",
        "I've been charged for something I didn't order.",
        "My phone bill has roaming charges but I never left {city}.",
        "duplicate charge on my card",
        "You charged me after I cancelled, I want that reversed.",
        "Can you explain the {amount} charge on my statement?",
        "My invoice shows a service I never signed up for.",
        "The discount code wasn't applied and I paid full price.",
        "I was billed twice for the same month.",
        "why did you charge me again",
        "My credit card shows {amount} pending from you for no reason.",
        "I checked my statement {when} and noticed that I've been paying for "
        "two lines even though I only have one phone, please correct the bill "
        "and refund the difference.",
        "The amount taken doesn't match my invoice.",
        "Wrong amount charged for {order}.",
        "Unauthorised charge from your company",
        "I got charged for delivery even though it said free shipping.",
        "Bill is wrong",
        "Why is my bill {amount} this month?",
    ],
    "payment_failed": [
        "My card keeps getting declined at checkout.",
        "Payment failed but I have enough money.",
        "Why won't my payment go through?",
        "I can't pay for the {item}, it says transaction error.",
        "payment declined",
        "The checkout page freezes when I click pay.",
        "I tried three cards and none of them work.",
        "Your site won't accept my PayPal.",
        "Error when paying: 'card not supported'.",
        "Can I pay another way? My card doesn't work on your site.",
        "The payment failed but the money left my account.",
        "My direct debit for the phone bill bounced, what now?",
        "Apple Pay is not working at checkout",
        "It says my billing address doesn't match when I try to pay.",
        "Why was my payment rejected {when}?",
        "I keep getting 'something went wrong' when I pay for {order}.",
        "cant pay",
        "The verification code for my card payment never arrives.",
        "I'm trying to buy the {item} before the sale ends but the payment "
        "keeps failing and I'm worried I'll lose the discount, please help.",
        "Do you accept cards from abroad? Mine was refused.",
        "The pay button is greyed out.",
        "transaction failed again",
        "Payment of {amount} could not be processed, what does that mean?",
        "My bank approved it but your site says declined.",
        "Can't complete my purchase, payment error",
        "I need to update my card because the payment failed.",
    ],
    "reset_password": [
        "I forgot my password.",
        "How do I reset my password?",
        "I can't log in to my account.",
        "The password reset email never arrives.",
        "locked out of my account",
        "It says my password is wrong but I'm sure it's right.",
        "I need to change my password.",
        "My account got locked after too many attempts.",
        "The reset link says it has expired.",
        "Can't sign in",
        "I don't remember my login details.",
        "I changed my email and now I can't log in.",
        "How can I recover my account?",
        "The two-factor code isn't coming to my phone.",
        "password not working",
        "I think someone changed my password, I can't get in.",
        "Help me get back into my account please.",
        "The app keeps logging me out and won't accept my password.",
        "I tried resetting my password {when} but I still can't log in and I "
        "have an order waiting that I need to check on.",
        "Where is the forgot password link?",
        "My username isn't recognised",
        "can you send me a new password",
        "Login fails every time",
        "I want to set a new password for security reasons.",
        "The page just reloads when I try to log in.",
        "forgot pasword",
    ],
    "cancel_subscription": [
        "I want to cancel my subscription.",
        "How do I close my account?",
        "Please end my contract.",
        "Stop my membership from renewing.",
        "cancel subscription",
        "I'm moving to another provider, how do I leave?",
        "Can I cancel my {plan} plan?",
        "I don't want to be charged again, cancel my membership.",
        "Delete my account and all my data.",
        "What's the notice period to cancel?",
        "Turn off auto-renew please.",
        "How much does it cost to end my contract early?",
        "I'd like to terminate my service.",
        "unsubscribe me from the premium membership",
        "I've been a customer for years but I'm leaving, please cancel everything.",
        "Will I get a refund if I cancel my subscription now?",
        "I want to cancel my broadband and keep my mobile.",
        "close my account",
        "I signed up for a free trial {when} and I want to cancel before "
        "I'm charged, but I can't find the option anywhere in the settings.",
        "Cancel the {plan} subscription at the end of this month.",
        "I'm not using the service anymore so please stop it.",
        "How do I get a PAC code to switch networks?",
        "end my membership",
        "Please cancel my contract, I'm moving to {city}.",
        "I want out of this plan",
        "Can I pause my subscription instead of cancelling?",
    ],
    "no_signal": [
        "My mobile data isn't working.",
        "I have no signal at home.",
        "Internet is down since {when}.",
        "Calls keep dropping.",
        "no service",
        "My phone says 'SOS only'.",
        "The 4G is really slow today.",
        "Is there an outage in {city}?",
        "I can't make calls but data works.",
        "My broadband keeps disconnecting.",
        "Wifi router lights are flashing red.",
        "I can't send texts.",
        "no internet",
        "My new SIM doesn't work.",
        "Data stopped working after I went abroad.",
        "The connection has been terrible all week.",
        "I'm paying for the {plan} plan but the speed is awful.",
        "Signal is gone in the whole building.",
        "I work from home and the internet has dropped out five times today, "
        "I need someone to fix this urgently or send an engineer.",
        "Phone shows full bars but nothing loads.",
        "Is the network down right now?",
        "cant connect to internet",
        "People say my number is unreachable.",
        "Hotspot stopped working.",
        "mobile data not working in {city}",
        "No dial tone on my landline.",
    ],
    "upgrade_plan": [
        "I want to upgrade my plan.",
        "Can I get more data?",
        "How do I switch to the {plan} plan?",
        "What plans do you have?",
        "change my plan",
        "Am I eligible for a phone upgrade?",
        "I keep running out of data, what are my options?",
        "Can I add a line for my daughter?",
        "I'd like a faster broadband package.",
        "What does the {plan} plan include?",
        "Move me to a cheaper plan please.",
        "Can I downgrade my contract?",
        "Is there a deal for existing customers?",
        "I want the new phone, can I upgrade early?",
        "How much is unlimited data?",
        "Add international calls to my plan.",
        "I'd like to compare my current plan with the {plan} one.",
        "upgrade",
        "My contract ends soon, what can you offer me to stay?",
        "My family all have separate contracts and I want to move us onto one "
        "shared {plan} plan if that saves money.",
        "Can I add a data booster for this month only?",
        "How do I change tariff?",
        "want more gigs",
        "Switch me to a 5G plan",
        "Is there a student discount on plans?",
        "I want to add TV to my broadband package.",
    ],
    "lost_card": [
        "I lost my bank card.",
        "My card was stolen.",
        "Please block my card.",
        "I can't find my debit card anywhere.",
        "freeze my card",
        "Someone took my wallet in {city}.",
        "I left my card in a shop {when}.",
        "How do I report a stolen card?",
        "There are payments of {amount} I didn't make, I think my card is compromised.",
        "Can you send me a replacement card?",
        "I think I dropped my credit card.",
        "My card got swallowed by the ATM.",
        "lost card",
        "Cancel my card immediately, it's gone.",
        "How long does a new card take to arrive?",
        "My purse was stolen with my card in it.",
        "I need a new card, mine snapped in half.",
        "Lock my card until I find it.",
        "I was on holiday and my card went missing, I'm still abroad and need "
        "to pay for my hotel, what can I do?",
        "Someone used my card online without permission.",
        "I misplaced my card, can I temporarily freeze it?",
        "card stolen what do i do",
        "I need an emergency replacement card.",
        "My card details were leaked in a scam.",
        "Report lost card",
        "Where is the option to block a card in the app?",
    ],
    "speak_to_agent": [
        "I want to talk to a human.",
        "Can I speak to a real person?",
        "Connect me to an agent please.",
        "agent",
        "Let me talk to someone.",
        "What is your phone number?",
        "I need a customer service representative.",
        "This bot isn't helping, get me a person.",
        "Transfer me to a supervisor.",
        "human please",
        "How do I call customer support?",
        "Is there a live chat with a real agent?",
        "I'd like to make a complaint to a manager.",
        "Can someone call me back?",
        "Speak to operator",
        "I've been going round in circles with this chatbot for twenty minutes, "
        "I just need to talk to an actual person who can sort this out.",
        "When is your call centre open?",
        "Put me through to the right department.",
        "representative",
        "I need to speak with someone in billing.",
        "Can I book a call with an advisor?",
        "talk to a person",
        "I want to escalate my issue to a team leader.",
        "Is there an email address for support?",
        "Get me a real human being!",
        "Who can I talk to about my problem?",
    ],
}


def _fill(template: str, rng: random.Random) -> str:
    values = {name: rng.choice(options) for name, options in SLOTS.items()}
    return template.format(**values)


def _typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    word = words[i]
    j = rng.randrange(1, len(word) - 2)
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def _vary(template: str, rng: random.Random) -> str:
    text = _fill(template, rng)
    prefix = rng.choice(PREFIXES)
    # Only a greeting that runs on ("Hi, ...") lowers the sentence's first letter.
    if prefix.endswith((", ", ": ")) and not text.startswith(("I ", "I'")):
        text = text[0].lower() + text[1:]
    text = prefix + text
    suffix = rng.choice(SUFFIXES)
    if suffix and text[-1] not in ".?!":
        suffix = suffix.lstrip(" ")
        if suffix[0].isalpha():
            text = f"{text}, {suffix[0].lower()}{suffix[1:]}"
        else:
            text = f"{text} {suffix}"
    else:
        text += suffix
    roll = rng.random()
    if roll < 0.12:
        text = _typo(text, rng)
    elif roll < 0.25:
        text = text.lower()
    elif roll < 0.32 and text[-1] in ".!":
        text = text[:-1]
    return text


def _rows(
    templates: list[str], count: int, label: str, rng: random.Random, seen: set[str]
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    # Every template once in its plain form first, then varied ones round-robin.
    pending = [_fill(t, rng) for t in templates]
    attempts = 0
    while len(rows) < count and attempts < count * 50:
        attempts += 1
        text = (
            pending.pop(0)
            if pending
            else _vary(templates[attempts % len(templates)], rng)
        )
        key = text.lower().strip(" .!?")
        if key in seen:
            continue
        seen.add(key)
        rows.append((text, label))
    if len(rows) < count:
        raise RuntimeError(f"could not make {count} distinct rows for {label!r}")
    return rows


def main() -> None:
    rng = random.Random(SEED)
    seen: set[str] = set()
    train: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    for label, templates in TEMPLATES.items():
        shuffled = templates[:]
        rng.shuffle(shuffled)
        held_out = shuffled[:TEST_TEMPLATES_PER_INTENT]
        test += _rows(held_out, TEST_ROWS_PER_INTENT, label, rng, seen)
        train += _rows(
            shuffled[TEST_TEMPLATES_PER_INTENT:],
            TRAIN_ROWS_PER_INTENT,
            label,
            rng,
            seen,
        )
    rng.shuffle(train)
    rng.shuffle(test)
    here = Path(__file__).resolve().parent
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with (here / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
